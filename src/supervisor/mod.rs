//! `hupwatch run -- gunicorn …`: hupwatch stands where Gunicorn's parent stood. It holds the
//! listening sockets for its whole life and starts Gunicorn on them in generations; a deploy
//! starts the next generation beside the serving one, and the switch happens only once the new
//! one has booted every worker — so a release that cannot load never takes a request, and no
//! request waits out an import.
//!
//! Stages, one file each: what the command says (`command_line`, `bind_address`, and from a
//! config file Gunicorn's own `printed_config`), the held
//! sockets (`listeners`) and the private directory (`report::control::ProcessDir`), a generation's process
//! (`generation`), when it is up (`readiness`), the health request to a check generation
//! (`probe`), Django's checks before a release gets one (`release_gate`), what a starting
//! generation calls for (`candidate`), the one release a generation belongs to (`pin`),
//! stopping one (`retiring`),
//! reaping (`reaper`), the changes that deploy (`changes`), signals, systemd and the pidfile
//! (`service`), what the control socket `hupwatch reload`/`status` reach it by asks of it
//! (`control`; the socket and its client are `report::control`, shared with `watch`), and the
//! loop that decides what each event means
//! (`supervise`).

pub mod activation;
pub mod before_deploy;
pub mod bind_address;
pub mod candidate;
pub mod command_line;
pub mod control;
pub mod generation;
pub mod listeners;
pub mod pin;
pub mod printed_config;
pub mod probe;
pub mod readiness;
pub mod reaper;
pub mod release_gate;
pub mod retiring;
pub mod service;
pub mod supervise;
pub mod surge;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::config::health::HealthCheck;
use crate::config::release_link::{ReleaseError, ReleaseLink};
use crate::config::runtime_dir::RuntimeDirError;
use crate::config::stop_timeout::StopTimeout;
use crate::config::{ConfigError, WatchSettings};
use crate::report::control::{PeerKind, ProcessDir};
use crate::supervisor::command_line::{CommandError, CommandFacts};
use crate::supervisor::listeners::ListenError;
use crate::supervisor::pin::{Pin, PinInputs};
use crate::supervisor::surge::{Surge, SurgeError, SurgeInputs};
use crate::watch::WatchError;
use crate::watch::serving_writes::ServingWrites;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("--boot-timeout must be more than zero")]
    ZeroBootTimeout,
    #[error("--before-deploy-timeout must be more than zero")]
    ZeroBeforeDeployTimeout,
    #[error("the first generation could not start, so there is nothing to serve: {0}")]
    FirstGeneration(String),
    #[error("gave up after {attempts} failed restarts in a row: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error(transparent)]
    Surge(#[from] SurgeError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

impl SupervisorError {
    /// 2 for what the user must fix before anything can run (the command, an address in
    /// use), 1 for a supervisor that ran and had to give up.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::Command(_)
            | Self::Listen(_)
            | Self::Watch(_)
            | Self::Surge(_)
            | Self::ZeroBootTimeout
            | Self::ZeroBeforeDeployTimeout => 2,
            Self::RuntimeDir(e) if e.is_unsafe() => 2,
            Self::RuntimeDir(_) => 1,
            Self::FirstGeneration(_) | Self::GaveUp { .. } | Self::Io { .. } => 1,
        }
    }
}

/// `hupwatch run`'s settings, validated once.
#[derive(Debug)]
pub struct RunSettings {
    pub command: Vec<OsString>,
    pub facts: CommandFacts,
    pub watch: WatchSettings,
    /// `--no-watch`: only SIGHUP and the control socket deploy.
    pub watching: bool,
    pub boot_timeout: Duration,
    /// Gunicorn ≥ 25.1: each generation is started with `--no-control-socket`.
    pub control_socket: bool,
    pub runtime_base: PathBuf,
    /// `--health-path`: each release is first booted as a check generation on a private probe
    /// socket and asked for it; only a release that passes gets a serving generation.
    pub health: Option<HealthCheck>,
    /// `--release-link`: each generation starts in the link's target; a swap deploys.
    pub release_link: Option<ReleaseLink>,
    /// Started by systemd (`NOTIFY_SOCKET`): a first generation that cannot start is fatal
    /// (systemd restarts the unit), where a developer at a terminal would fix the code.
    pub under_systemd: bool,
    /// `--stop-timeout`: a SIGTERM/SIGINT leaves nothing running within this (`supervise`).
    pub stop: StopTimeout,
    /// `--metrics-file` (`report::metrics`).
    pub metrics_file: Option<PathBuf>,
    /// `--on-success`, `--on-failure` (`report::hooks`).
    pub hooks: crate::config::hooks::Hooks,
    /// `--before-deploy` (`before_deploy`).
    pub before_deploy: Option<before_deploy::BeforeDeploy>,
    /// The `app` label of the metrics: the release link's parent directory's name (the app's
    /// deploy directory), else the working directory's, as `watch` names an app given by flags.
    pub app_name: String,
    /// `--max-surge`: switch rolling (`surge`); `None` is blue/green.
    pub surge: Option<Surge>,
}

impl RunSettings {
    /// The directory the next generation serves the release from: COMMAND's `--chdir` (Gunicorn
    /// goes there whatever it starts in), else the release link's target now (the generation
    /// starts there), else hupwatch's own working directory (each generation inherits it).
    pub fn release_dir(&self) -> Result<PathBuf, ReleaseError> {
        let cwd = std::env::current_dir().unwrap_or_default();
        match (&self.facts.chdir, &self.release_link) {
            (Some(dir), _) => Ok(cwd.join(dir)),
            (None, Some(link)) => link.target(),
            (None, None) => Ok(cwd),
        }
    }

    /// What serving writes, known before the first generation starts (its logs are written at
    /// once): the pidfile hupwatch writes for the user, its runtime directory, and the files that
    /// COMMAND's own flags name, relative to the directory the release is served from.
    pub fn serving_writes(&self, dir: &ProcessDir) -> ServingWrites {
        let mut writes = ServingWrites::default();
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(pidfile) = &self.facts.pidfile {
            let pidfile = cwd.join(pidfile);
            writes.add_own_file(&pidfile, &service::pidfile_temporary(&pidfile));
        }
        if let Some(file) = &self.metrics_file {
            writes.add_own_file(file, &crate::report::metrics::temporary_path(file));
        }
        writes.add_own_dir(dir.path());
        let argv: Vec<String> = self
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let parsed = crate::gunicorn::cmdline::parse_args(
            crate::gunicorn::cmdline::gunicorn_args(&argv).unwrap_or(&argv),
        );
        writes.add_cmdline(&parsed, &self.release_dir().unwrap_or(cwd));
        writes
    }

    /// The release the next generation belongs to, decided now (`pin`): where it starts, the
    /// resolved `--chdir` it is given last, and its program resolved when it lies in the release.
    pub fn pin(&self) -> Result<Pin, ReleaseError> {
        let link_target = self
            .release_link
            .as_ref()
            .map(ReleaseLink::target)
            .transpose()?;
        let cwd = std::env::current_dir().unwrap_or_default();
        let program = self.command.first().map(PathBuf::from).unwrap_or_default();
        // A bare name is looked up on PATH, never in a release: its `#!` line does not matter.
        let shebang = (program.components().count() > 1)
            .then(|| pin::read_shebang(&link_target.as_deref().unwrap_or(&cwd).join(&program)))
            .flatten();
        let inputs = PinInputs {
            program: &program,
            chdir: self.facts.chdir.as_deref(),
            link_target: link_target.as_deref(),
            shebang: shebang.as_deref(),
            cwd: &cwd,
        };
        Ok(pin::decide(inputs, |path| std::fs::canonicalize(path).ok()))
    }

    pub fn from_args(args: RunArgs) -> Result<Self, SupervisorError> {
        let words: Vec<String> = args
            .command
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let env = |key| std::env::var(key).ok();
        let mut facts = command_line::inspect(
            &words,
            env("GUNICORN_CMD_ARGS").as_deref(),
            env("PORT").as_deref(),
            env("WEB_CONCURRENCY").as_deref(),
        )?;
        apply_config_file(&args.command, &words, &mut facts);
        if args.generations.boot_timeout.is_zero() {
            return Err(SupervisorError::ZeroBootTimeout);
        }
        let watch =
            WatchSettings::from_args(&args.paths, &args.filter, &args.debounce, &args.release)?;
        let release_link = crate::config::release_link(&args.release)?;
        let app_name = app_name(release_link.as_ref());
        let runtime_base = args
            .generations
            .runtime_dir
            .map(|d| std::path::absolute(&d).unwrap_or(d))
            .or_else(crate::config::default_runtime_dir)
            .unwrap_or_else(crate::config::runtime_dir::temp_runtime_dir);
        let control_socket = command_line::has_control_socket(gunicorn_version(&args.command));
        // Where `ProcessDir` will be, with the longest PID: its sockets' paths must fit.
        let process_dir = runtime_base.join(format!("{}{}", PeerKind::Run.dir_prefix(), u32::MAX));
        let surge = Surge::decide(SurgeInputs {
            max_surge: args.generations.max_surge,
            workers: facts.workers,
            release_link: release_link.is_some(),
            control_socket,
            runtime_dir: &process_dir,
        })?;
        match (surge, args.generations.max_surge) {
            (Some(s), _) => info!(
                max_surge = s.step,
                workers = s.workers,
                "a switch rolls {} worker(s) at a time: at most {} workers run during a deploy (blue/green would run {})",
                s.step,
                s.workers + s.step,
                2 * s.workers
            ),
            (None, Some(n)) => info!(
                max_surge = n,
                "--max-surge {n} is not below COMMAND's worker count: a switch is blue/green"
            ),
            (None, None) => {}
        }
        Ok(Self {
            command: args.command,
            facts,
            watch,
            watching: !args.generations.no_watch,
            boot_timeout: args.generations.boot_timeout,
            control_socket,
            runtime_base,
            health: HealthCheck::from_args(&args.health.as_health_args())?,
            release_link,
            under_systemd: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
            stop: StopTimeout::new(args.stop.stop_timeout, None)?,
            metrics_file: crate::config::metrics_file::resolve(
                args.metrics.metrics_file.as_deref(),
                None,
            )?,
            app_name,
            hooks: crate::config::hooks::Hooks::from_args(&args.hooks)?,
            before_deploy: before_deploy(&args.before_deploy)?,
            surge,
        })
    }
}

fn before_deploy(
    args: &crate::cli::BeforeDeployArgs,
) -> Result<Option<before_deploy::BeforeDeploy>, SupervisorError> {
    let Some(command) = &args.before_deploy else {
        return Ok(None);
    };
    if command.trim().is_empty() {
        return Err(ConfigError::EmptyHook("--before-deploy").into());
    }
    if args.before_deploy_timeout.is_zero() {
        return Err(SupervisorError::ZeroBeforeDeployTimeout);
    }
    Ok(Some(before_deploy::BeforeDeploy {
        command: command.clone(),
        timeout: args.before_deploy_timeout,
    }))
}

fn app_name(link: Option<&ReleaseLink>) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    link.and_then(|l| l.path().parent())
        .unwrap_or(&cwd)
        .file_name()
        .map_or_else(|| "app".into(), |n| n.to_string_lossy().into_owned())
}

/// `COMMAND --version`'s answer, `None` when it does not answer so.
fn gunicorn_version(command: &[OsString]) -> Option<(u32, u32)> {
    let (_, output) = printed_config::answer(command, "--version").ok()?;
    command_line::parse_version(&output)
}

/// With a config file in play, the binds and worker count Gunicorn itself prints replace what
/// the command line alone told (Gunicorn's printout already lets the command line win). If it
/// cannot answer, say so and keep the command line's.
fn apply_config_file(command: &[OsString], words: &[String], facts: &mut CommandFacts) {
    let cmd_args = std::env::var("GUNICORN_CMD_ARGS").ok();
    let cwd = std::env::current_dir().unwrap_or_default();
    if !printed_config::uses_config_file(words, cmd_args.as_deref(), &cwd) {
        return;
    }
    let printed = printed_config::ask(command).and_then(|printed| {
        let mut binds = Vec::new();
        for text in &printed.binds {
            let bind = bind_address::BindAddress::parse(text).map_err(|e| {
                printed_config::PrintConfigError::Failed {
                    command: "gunicorn".into(),
                    why: format!("printed a bind hupwatch cannot hold: {e}"),
                }
            })?;
            if !binds.contains(&bind) {
                binds.push(bind);
            }
        }
        Ok((binds, printed.workers))
    });
    match printed {
        Ok((binds, workers)) if !binds.is_empty() => {
            let shown: Vec<String> = binds.iter().map(ToString::to_string).collect();
            info!(
                "Gunicorn's config (--print-config): bind {}, workers {}",
                shown.join(", "),
                workers.map_or("unknown".into(), |w| w.to_string())
            );
            facts.binds = binds;
            facts.workers = workers.or(facts.workers);
        }
        Ok(_) => warn!("Gunicorn's config binds nothing; using the command line's addresses"),
        Err(e) => warn!(
            "cannot read Gunicorn's config file settings: {e}; using the command line's binds and workers"
        ),
    }
}

/// Run until SIGTERM/SIGINT (Ok), or until the app cannot be kept up (Err).
pub fn run(args: RunArgs) -> Result<(), SupervisorError> {
    // Before anything else can start a process that would inherit them.
    let passed = activation::take_passed()?;
    let settings = RunSettings::from_args(args)?;
    // Before any socket is bound: a runtime directory someone else controls is refused first.
    let dir = ProcessDir::create(&settings.runtime_base, PeerKind::Run)?;
    let io = |context| move |source| SupervisorError::Io { context, source };
    let listeners = match passed {
        Some(passed) => {
            for listener in &passed {
                info!(address = %listener.address, "listening on {} (from systemd socket activation; the command's binds are not used)", listener.address);
            }
            passed
        }
        None => {
            let bound = listeners::bind_all(&settings.facts.binds)?;
            for listener in &bound {
                info!(address = %listener.address, "listening on {} (held by hupwatch, inherited by every generation)", listener.address);
            }
            bound
        }
    };
    reaper::become_subreaper().map_err(|e| SupervisorError::Io {
        context: "becoming a child subreaper",
        source: e.into(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the async runtime"))?;
    let result = runtime.block_on(supervise::run(&settings, listeners, &dir));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
