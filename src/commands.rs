//! The subcommands, each from parsed arguments to a `Result`; `main` turns that into an exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::CommandFactory;

use crate::cli::{CheckConfigArgs, Cli, Command, ReloadCommandArgs, StatusArgs, WatchArgs};
use crate::config::config_file;
use crate::config::release_link;
use crate::config::stop_timeout::StopTimeout;
use crate::config::{self, AppArgs, AppConfig, ReloadSettings, TargetSelector};
use crate::daemon::event_loop;
use crate::error::AppError;
use crate::gunicorn::discover;
use crate::reload::{self, ReloadError};
use crate::report;
use crate::report::control::{ControlPeer, PeerKind};
use crate::report::reload_result::{ReloadResult, ResultKind, Serving, StrategyUsed};

pub fn run(command: Command) -> Result<(), AppError> {
    match command {
        Command::Watch(args) => watch(args),
        Command::Reload(args) => reload(args),
        Command::Run(args) => crate::supervisor::run(args).map_err(AppError::from),
        Command::Status(args) => status(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "hupwatch",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => crate::man_page::render(&mut std::io::stdout().lock())
            .map_err(io("writing the man page")),
    }
}

fn watch(args: WatchArgs) -> Result<(), AppError> {
    let WatchArgs { config, stop, app } = args;
    let app_flags = !app.paths.watch.is_empty()
        || app.release.release_link.is_some()
        || app.target.pidfile.is_some()
        || app.target.pid.is_some()
        || app.target.match_text.is_some();
    let file = match config {
        Some(_) if app_flags => return Err(AppError::ConfigWithFlags),
        Some(path) => Some(path),
        None if !app_flags && Path::new(config_file::DEFAULT_PATH).exists() => {
            Some(PathBuf::from(config_file::DEFAULT_PATH))
        }
        None => None,
    };
    let (apps, file_stop) = match &file {
        Some(path) => {
            let loaded = config_file::load_all(path)?;
            (loaded.apps, loaded.stop_timeout)
        }
        None => (vec![AppConfig::from_args(app_name(&app), &app)?], None),
    };
    let stop = StopTimeout::new(stop.stop_timeout, file_stop)?;
    // Refused at start (exit 2), not at the first reload: see `config::runtime_dir`. One that
    // cannot be created yet (the unit's read-only /run before tmpfiles ran) is no reason to
    // stop: its reloads run unlocked, with a warning, as before.
    for dir in apps.iter().filter_map(|a| a.reload.runtime_dir.as_deref()) {
        match config::runtime_dir::own_runtime_dir(dir) {
            Err(e) if e.is_unsafe() => return Err(e.into()),
            _ => {}
        }
    }
    // The control socket's directory: the first app's runtime directory (`--runtime-dir`, the
    // file's top-level key, or the default), else `$TMPDIR/hupwatch-<uid>` as for `run`.
    let control_base = apps
        .first()
        .and_then(|a| a.reload.runtime_dir.clone())
        .unwrap_or_else(config::runtime_dir::temp_runtime_dir);
    crate::preflight::warm_checker::enable();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the async runtime"))?;
    let result = runtime.block_on(event_loop::run(apps, file, stop, &control_base));
    // Do not wait for an abandoned verification still polling on a blocking thread.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    crate::preflight::warm_checker::shutdown();
    result
}

/// A name for the one app given by flags, for log lines: what the user selected it by.
fn app_name(args: &AppArgs) -> String {
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let from_link = args
        .release
        .release_link
        .as_deref()
        .and_then(|l| l.parent())
        .and_then(file_name);
    let from_pidfile = args
        .target
        .pidfile
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned());
    let from_root = args
        .paths
        .watch
        .first()
        .and_then(|p| std::path::absolute(p).ok())
        .as_deref()
        .and_then(file_name);
    args.target
        .match_text
        .clone()
        .or(from_link)
        .or(from_pidfile)
        .or_else(|| args.target.pid.map(|p| format!("pid-{p}")))
        .or(from_root)
        .unwrap_or_else(|| "app".into())
}

/// `hupwatch reload`: the deploy step. With `--json` its outcome is printed as one object
/// whatever it was, the failure's exit code and kind taken from the error itself
/// (`AppError::exit_code`, `AppError::result_kind`).
fn reload(args: ReloadCommandArgs) -> Result<(), AppError> {
    let started = Instant::now();
    let mut seen = Seen::default();
    let done = reload_step(&args, &mut seen);
    if args.step.json {
        let mut result = match &done {
            Ok(result) => result.clone(),
            Err(e) => {
                // Looked up again only if a master was found before: a command line refused
                // before that has nothing to compare.
                let after = match (&seen.after, seen.before.master) {
                    (Some(after), _) => after.clone(),
                    (None, Some(_)) => serving_now(&args),
                    (None, None) => Serving::default(),
                };
                let mut failed =
                    ReloadResult::new(e.result_kind(), e.exit_code(), seen.before.clone(), after)
                        .reason(e.to_string());
                failed.coalesced = matches!(e, AppError::Reload(r) if r.is_coalesced());
                failed
            }
        };
        result.supervisor = seen.supervisor;
        // A closed stdout must not turn the reload's own exit code into another one.
        if let Err(e) = result.took(started.elapsed()).print() {
            tracing::warn!("cannot write the JSON result: {e}");
        }
    }
    done.map(drop)
}

/// What a reload saw, for its JSON result even when it fails half-way.
#[derive(Default)]
struct Seen {
    before: Serving,
    /// Known from the supervisor's answer; else looked up after a failure.
    after: Option<Serving>,
    supervisor: Option<u32>,
}

fn reload_step(args: &ReloadCommandArgs, seen: &mut Seen) -> Result<ReloadResult, AppError> {
    let target = TargetSelector::from_args(&args.target)?;
    if let Some(peer) = ControlPeer::aimed_at(&target) {
        // `hupwatch run` switches generations itself and answers once the switch is verified;
        // `hupwatch watch` re-reads its config file and answers whether it is in force.
        return reload_peer(args, &peer, seen);
    }
    let settings = ReloadSettings::from_args(&args.reload, &args.preflight, &args.release)?;
    let master = discover::find_master(&target)?;
    seen.before = Serving::of(&master);
    if let Some(link) = settings.release_link.as_ref().filter(|_| !args.step.force)
        && let Some(release) = reload::release_check::already_serving(&master, link)?
    {
        return Ok(unchanged(&release, &seen.before));
    }
    let outcome = reload::reload_checked(&target, &settings, None)?;
    report::reload_succeeded(&outcome);
    Ok(ReloadResult::of_outcome(&outcome, seen.before.clone()))
}

/// A deploy run again: what it asks for already serves, so nothing is sent.
fn unchanged(release: &Path, serving: &Serving) -> ReloadResult {
    let master = serving.master.map_or("?".into(), |m| m.to_string());
    let reason = format!(
        "the workers of master {master} already run {} (the release link's target); nothing sent (--force reloads anyway)",
        release.display()
    );
    tracing::info!(master = serving.master, release = %release.display(), "unchanged: {reason}");
    ReloadResult::new(ResultKind::Unchanged, 0, serving.clone(), serving.clone()).reason(reason)
}

fn reload_peer(
    args: &ReloadCommandArgs,
    peer: &ControlPeer,
    seen: &mut Seen,
) -> Result<ReloadResult, AppError> {
    if peer.kind != PeerKind::Run {
        peer.reload(args.reload.dry_run)?;
        return Ok(ReloadResult::new(
            ResultKind::Reloaded,
            0,
            Serving::default(),
            Serving::default(),
        ));
    }
    seen.supervisor = Some(peer.pid);
    let link = config::release_link(&args.release)?;
    let serving = peer.status()?.serving().map(Serving::of_generation);
    seen.before = serving.clone().unwrap_or_default();
    if let (Some(link), Some(serving), false) = (&link, &serving, args.step.force) {
        let target = link.target().map_err(ReloadError::from)?;
        if serving.release.as_ref() == Some(&target) {
            return Ok(unchanged(&target, serving));
        }
    }
    let switch = peer.reload(args.reload.dry_run).inspect_err(|e| {
        seen.after = e
            .switch()
            .and_then(|s| s.after.as_ref().map(Serving::of_generation));
    })?;
    let after = switch
        .and_then(|s| s.after.as_ref().map(Serving::of_generation))
        .unwrap_or_else(|| seen.before.clone());
    if args.reload.dry_run {
        return Ok(
            ReloadResult::new(ResultKind::Unchanged, 0, seen.before.clone(), after)
                .reason("dry run: nothing sent"),
        );
    }
    let mut result = ReloadResult::new(ResultKind::Reloaded, 0, seen.before.clone(), after);
    result.strategy = Some(StrategyUsed::Supervisor);
    Ok(result)
}

/// After a failure: what serves now, if the target can still be found.
fn serving_now(args: &ReloadCommandArgs) -> Serving {
    TargetSelector::from_args(&args.target)
        .ok()
        .and_then(|t| discover::find_master(&t).ok())
        .map_or_else(Serving::default, |m| Serving::of(&m))
}

fn status(args: StatusArgs) -> Result<(), AppError> {
    let target = TargetSelector::from_args(&args.target)?;
    if let Some(supervisor) = ControlPeer::named_by(&target) {
        let view = supervisor.status()?;
        return report::print_supervisor(&view, args.json).map_err(io("writing status"));
    }
    let masters = discover::list_masters(&target)?;
    let link = config::release_link(&args.release)?;
    let link_target = match &link {
        Some(link) => Some(link.target().map_err(ReloadError::from)?),
        None => None,
    };
    let view = link
        .as_ref()
        .zip(link_target.as_deref())
        .map(|(link, target)| report::LinkView {
            path: link.path(),
            target,
        });
    // Every `hupwatch run` on the host too (only without a selector: a selector names masters).
    let supervisors: Vec<_> = match target.by {
        config::By::OnlyOne => ControlPeer::all_supervisors()
            .iter()
            .filter_map(|s| s.status().ok())
            .collect(),
        _ => Vec::new(),
    };
    let memory = config::runtime_dir::chosen_runtime_dir(args.runtime_dir.as_deref());
    report::print_status(&masters, args.json, view, &supervisors, memory.as_deref())
        .map_err(io("writing status"))
}

/// Validate the file, then show what each app would watch and which master it resolves to.
fn check_config(args: CheckConfigArgs) -> Result<(), AppError> {
    let path = args
        .config
        .unwrap_or_else(|| PathBuf::from(config_file::DEFAULT_PATH));
    let apps = config_file::load(&path)?;
    let mut out = std::io::stdout().lock();
    let mut print = || -> std::io::Result<()> {
        writeln!(out, "{}: {} app(s), valid", path.display(), apps.len())?;
        for app in &apps {
            writeln!(out, "[{}]", app.name)?;
            for root in &app.watch.roots {
                writeln!(out, "  watch        {}", root.display())?;
            }
            if let Some(link) = &app.reload.release_link {
                let target = link
                    .target()
                    .map_or_else(|e| format!("({e})"), |t| t.display().to_string());
                writeln!(out, "  release link {} -> {target}", link.path().display())?;
            }
            for link in app
                .watch
                .roots
                .iter()
                .flat_map(|r| release_link::symlinks_on_path(r))
            {
                writeln!(
                    out,
                    "  follows      {} (symlink on a watch path)",
                    link.display()
                )?;
            }
            writeln!(
                out,
                "  reload       {}{}, preflight {}",
                app.reload.plan.action(),
                if app.reload.plan.dry_run {
                    " (dry run)"
                } else {
                    ""
                },
                match &app.reload.preflight {
                    Some(p) => format!("{:?}", p.check),
                    None => "off".into(),
                }
            )?;
            match discover::find_master(&app.target) {
                Ok(m) => writeln!(out, "  master       {}", m.describe())?,
                Err(e) => writeln!(out, "  master       none: {e}")?,
            }
        }
        Ok(())
    };
    print().map_err(io("writing the report"))
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> AppError {
    move |source| AppError::Io { context, source }
}
