//! Tests of `strategy_choice`: which way a reload goes out for each combination of measured
//! load time, preload and systemd unit, kept apart to keep `strategy_choice.rs` readable.

use super::*;

fn around() -> Surroundings {
    Surroundings {
        pid: 4242,
        container_init: false,
        supervisor: None,
        terminal: false,
        handover: Handover::NotMain,
        unit_reloads_with_hupwatch: false,
    }
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

const NO: Preload = Preload::No;

fn yes() -> Preload {
    Preload::Yes("--preload on the command line".into())
}

fn unknown() -> Preload {
    Preload::Unknown("setproctitle overwrote the command line".into())
}

fn auto(room: &Room, preload: Preload, load: Option<Duration>) -> Result<Choice, Refusal> {
    choose(Method::Auto, Some(room), &preload, load)
}

#[test]
fn auto_hups_an_app_that_loads_within_the_budget_and_upgrades_one_that_does_not() {
    let fast = auto(&Room::Either, NO, ms(13)).unwrap();
    assert_eq!(fast.route, Route::Signal(Signal::SIGHUP));
    assert!(fast.why.unwrap().contains("loads in 13ms, within the 50ms"));
    let edge = auto(&Room::Either, NO, ms(50)).unwrap();
    assert_eq!(edge.route, Route::Signal(Signal::SIGHUP));
    let slow = auto(&Room::Either, NO, ms(1500)).unwrap();
    assert_eq!(slow.route, Route::Upgrade);
    assert!(slow.why.unwrap().contains("stall requests that long"));
}

#[test]
fn auto_upgrades_when_the_load_time_is_unknown_or_the_master_preloads() {
    let unknown = auto(&Room::Either, NO, None).unwrap();
    assert_eq!(unknown.route, Route::Upgrade);
    assert!(unknown.why.unwrap().contains("unknown"));
    let preload = auto(&Room::Either, yes(), ms(5)).unwrap();
    assert_eq!(preload.route, Route::Upgrade);
    assert!(preload.why.unwrap().contains("preloads"));
}

#[test]
fn where_an_upgrade_cannot_work_auto_keeps_to_hup_and_says_why() {
    let cases = [
        (
            Surroundings {
                container_init: true,
                ..around()
            },
            "PID 1 of its container",
        ),
        (
            Surroundings {
                supervisor: Some("supervisord".into()),
                ..around()
            },
            "under supervisord",
        ),
        (
            Surroundings {
                terminal: true,
                ..around()
            },
            "started from a terminal",
        ),
        (
            Surroundings {
                handover: Handover::Refuse {
                    unit: "app.service".into(),
                    why: "hupwatch runs in hupwatch.service, not in that unit".into(),
                },
                ..around()
            },
            "main process of app.service",
        ),
    ];
    for (s, reason) in cases {
        let room = room(&s);
        let choice = auto(&room, NO, ms(1500)).unwrap();
        assert_eq!(choice.route, Route::Signal(Signal::SIGHUP), "{reason}");
        let why = choice.why.unwrap();
        assert!(
            why.starts_with("auto chose HUP: ") && why.contains(reason),
            "{why}"
        );
        assert!(
            matches!(auto(&room, yes(), None), Err(Refusal::PreloadCannotUpgrade { why, .. }) if why.contains(reason)),
            "a preloading master there has no way to new code"
        );
    }
}

#[test]
fn a_unit_reloaded_by_hupwatch_is_reloaded_through_systemctl_by_auto_and_upgrade_alike() {
    let s = Surroundings {
        handover: Handover::Refuse {
            unit: "app.service".into(),
            why: "hupwatch runs in hupwatch.service, not in that unit".into(),
        },
        unit_reloads_with_hupwatch: true,
        ..around()
    };
    let room = room(&s);
    let unit = Route::UnitReload {
        unit: "app.service".into(),
    };
    assert_eq!(auto(&room, NO, ms(1)).unwrap().route, unit);
    assert_eq!(
        choose(Method::Upgrade, Some(&room), &NO, None)
            .unwrap()
            .route,
        unit
    );
    // An explicit HUP is a HUP: the unit's main PID does not change.
    assert_eq!(
        choose(Method::Signal(Signal::SIGHUP), Some(&room), &NO, None)
            .unwrap()
            .route,
        Route::Signal(Signal::SIGHUP)
    );
}

#[test]
fn the_handover_inside_the_unit_leaves_both_ways_open() {
    let s = Surroundings {
        handover: Handover::Announce {
            unit: "app.service".into(),
        },
        ..around()
    };
    assert_eq!(room(&s), Room::Either);
}

#[test]
fn fixed_strategies_are_not_second_guessed() {
    let hup = choose(Method::Signal(Signal::SIGHUP), None, &NO, ms(5000)).unwrap();
    assert_eq!((hup.route, hup.why), (Route::Signal(Signal::SIGHUP), None));
    assert!(matches!(
        choose(Method::Signal(Signal::SIGHUP), None, &yes(), None),
        Err(Refusal::PreloadNeedsUpgrade { source }) if source.contains("--preload")
    ));
    let usr1 = choose(Method::Signal(Signal::SIGUSR1), None, &yes(), None).unwrap();
    assert_eq!(usr1.route, Route::Signal(Signal::SIGUSR1));
    let up = choose(Method::Upgrade, Some(&Room::Either), &NO, ms(1)).unwrap();
    assert_eq!((up.route, up.why), (Route::Upgrade, None));
}

#[test]
fn exec_reload_naming_hupwatch_reload_is_recognised() {
    let ours = "{ path=/usr/local/bin/hupwatch ; argv[]=/usr/local/bin/hupwatch reload --pid $MAINPID --strategy upgrade ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }";
    assert!(runs_hupwatch_reload(ours));
    let kill = "{ path=/bin/kill ; argv[]=/bin/kill -HUP $MAINPID ; ignore_errors=no }";
    assert!(!runs_hupwatch_reload(kill));
    assert!(!runs_hupwatch_reload(""));
}

#[test]
fn a_master_that_may_preload_is_upgraded_by_auto_and_saying_why() {
    let choice = auto(&Room::Either, unknown(), ms(5)).unwrap();
    assert_eq!(choice.route, Route::Upgrade);
    assert!(!choice.unproven);
    let why = choice.why.unwrap();
    assert!(
        why.starts_with("auto chose upgrade: preload_app unknown: "),
        "{why}"
    );
    let detail = choice.detail.unwrap_or_default();
    assert!(detail.starts_with("setproctitle"), "{detail}");
}

#[test]
fn a_hup_to_a_master_that_may_preload_goes_out_unproven_with_the_ways_to_certainty() {
    let asked = choose(Method::Signal(Signal::SIGHUP), None, &unknown(), ms(5)).unwrap();
    assert_eq!(asked.route, Route::Signal(Signal::SIGHUP));
    assert!(asked.unproven);
    let why = asked.why.unwrap();
    assert!(
        why.contains("cannot prove that the new workers loaded the new code"),
        "{why}"
    );
    let detail = asked.detail.unwrap_or_default();
    assert!(detail.contains("--strategy upgrade"), "{detail}");
    assert!(detail.contains("preload_app = False"), "{detail}");
    let room = Room::HupOnly("master 4242 was started from a terminal".into());
    let only = auto(&room, unknown(), None).unwrap();
    assert_eq!(only.route, Route::Signal(Signal::SIGHUP));
    assert!(only.unproven);
    assert!(only.why.unwrap().starts_with("auto chose HUP: master 4242"));
    let known = auto(&room, NO, None).unwrap();
    assert!(!known.unproven);
    let usr1 = choose(Method::Signal(Signal::SIGUSR1), None, &unknown(), None).unwrap();
    assert!(!usr1.unproven && usr1.why.is_none());
}

#[test]
fn status_describes_auto_with_the_preload_answer() {
    assert!(describe_auto(&Room::Either, &NO).starts_with("HUP if the app loads within 50ms"));
    assert_eq!(
        describe_auto(&Room::Either, &unknown()),
        "upgrade (preload_app unknown)"
    );
    let room = Room::HupOnly("master 4242 runs under supervisord".into());
    assert!(describe_auto(&room, &yes()).starts_with("nothing: it preloads"));
    assert!(describe_auto(&room, &unknown()).starts_with("HUP only, unproven"));
}

#[test]
fn without_an_app_spec_the_upgrade_is_the_preflight_where_an_upgrade_can_work() {
    let looked = "the title [shopfront] (not MODULE:CALLABLE…)";
    let auto = upgrade_as_preflight(Method::Auto, Some(&Room::Either), looked).unwrap();
    assert_eq!(auto.route, Route::Upgrade);
    let why = auto.why.unwrap();
    assert!(
        why.starts_with("auto chose upgrade: the upgrade is the preflight"),
        "{why}"
    );
    assert!(why.contains("checks") && why.contains("skipped"), "{why}");
    let detail = auto.detail.unwrap();
    assert!(
        detail.contains(looked) && detail.contains("--app"),
        "{detail}"
    );
    let asked = upgrade_as_preflight(Method::Upgrade, Some(&Room::Either), looked).unwrap();
    assert_eq!(asked.route, Route::Upgrade);

    let cannot = Room::HupOnly("master 4242 runs under supervisord".into());
    assert_eq!(
        upgrade_as_preflight(Method::Auto, Some(&cannot), looked),
        None
    );
    let hup = Method::Signal(Signal::SIGHUP);
    assert_eq!(upgrade_as_preflight(hup, None, looked), None);
}
