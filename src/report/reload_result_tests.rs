//! Tests of the result object: how an outcome or a failure becomes one, and its shape.

use super::*;
use crate::gunicorn::process_tree::MasterProcess;

fn outcome(old_master: u32, master: u32, action: &'static str) -> ReloadOutcome {
    ReloadOutcome {
        master: MasterProcess::described(master, 1, "gunicorn: master [app:app]"),
        old_master,
        action,
        why: None,
        old: vec![1, 2],
        new: vec![3, 4],
        elapsed: Duration::from_millis(5),
        preflight: None,
        release: Some("/srv/app/releases/2".into()),
        dry_run: false,
        coalesced_by: None,
        boot: Default::default(),
        superseded: false,
        loaded: None,
    }
}

#[test]
fn the_strategy_is_what_happened_to_the_master_and_a_dry_run_is_unchanged() {
    let before = Serving {
        master: Some(10),
        workers: vec![1, 2],
        release: Some("/srv/app/releases/1".into()),
    };
    let hup = ReloadResult::of_outcome(&outcome(10, 10, "HUP"), before.clone());
    assert_eq!(
        (hup.result, hup.strategy),
        (ResultKind::Reloaded, Some(StrategyUsed::Hup))
    );
    assert_eq!(hup.workers.after, Some(vec![3, 4]));
    assert_eq!(hup.release.after, Some("/srv/app/releases/2".into()));
    // `systemctl reload` whose ExecReload= upgraded: a new master is an upgrade.
    let unit = ReloadResult::of_outcome(&outcome(10, 11, "systemctl reload"), before.clone());
    assert_eq!(unit.strategy, Some(StrategyUsed::Upgrade));
    assert_eq!(
        (unit.master.before, unit.master.after),
        (Some(10), Some(11))
    );
    let mut coalesced = outcome(10, 10, "HUP");
    coalesced.coalesced_by = Some(77);
    assert!(ReloadResult::of_outcome(&coalesced, before.clone()).coalesced);
    let mut dry = outcome(10, 10, "HUP");
    dry.dry_run = true;
    let dry = ReloadResult::of_outcome(&dry, before);
    assert_eq!((dry.result, dry.strategy), (ResultKind::Unchanged, None));
    assert_eq!(dry.workers.after, Some(vec![1, 2]), "nothing was replaced");
}

#[test]
fn the_object_has_every_documented_field_even_when_nothing_is_known() {
    let result = ReloadResult::new(
        ResultKind::Failed,
        2,
        Serving::default(),
        Serving::default(),
    )
    .reason("unexpected argument '--bogus' found");
    let value = serde_json::to_value(&result).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "schema": 1,
            "result": "failed",
            "exit_code": 2,
            "master": {"before": null, "after": null},
            "workers": {"before": null, "after": null},
            "release": {"before": null, "after": null},
            "strategy": null,
            "action": null,
            "duration_ms": 0,
            "reason": "unexpected argument '--bogus' found",
            "coalesced": false,
            "supervisor": null,
        })
    );
    let kinds = [
        ResultKind::Reloaded,
        ResultKind::Unchanged,
        ResultKind::HeldBack,
        ResultKind::RolledBack,
        ResultKind::Failed,
    ];
    let names: Vec<String> = kinds
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "reloaded",
            "unchanged",
            "held_back",
            "rolled_back",
            "failed"
        ]
    );
}

#[test]
fn a_supervisors_generation_that_never_took_over_is_held_back() {
    let serving = Serving {
        master: Some(10),
        workers: vec![11, 12],
        release: None,
    };
    let both = (serving.clone(), serving.clone());
    let kept = ReloadResult::failed(ResultKind::Failed, 1, both.clone(), Some(9));
    assert_eq!(kept.result, ResultKind::HeldBack);
    let own = ReloadResult::failed(ResultKind::Failed, 1, both, None);
    assert_eq!(own.result, ResultKind::Failed, "a master's own reload");
    let moved = Serving {
        master: Some(20),
        ..serving.clone()
    };
    let changed = ReloadResult::failed(ResultKind::Failed, 1, (serving.clone(), moved), Some(9));
    assert_eq!(changed.result, ResultKind::Failed);
    let gone = (serving.clone(), Serving::default());
    let unknown = ReloadResult::failed(ResultKind::Failed, 1, gone, Some(9));
    assert_eq!(unknown.result, ResultKind::Failed);
    let rolled = ReloadResult::failed(
        ResultKind::RolledBack,
        1,
        (serving.clone(), serving),
        Some(9),
    );
    assert_eq!(rolled.result, ResultKind::RolledBack);
}

#[test]
fn a_kinds_label_is_its_json_name() {
    for kind in ResultKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{}\"", kind.label()));
    }
}
