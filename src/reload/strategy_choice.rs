//! Which way one reload goes out, and why: the `--strategy auto` decision.
//!
//! A HUP makes Gunicorn stop the old workers at once, so requests wait until a new worker has
//! loaded the app: the stall is the app's load time. The warm preflight measures it (a fork of
//! a process that has imported Gunicorn already, then the app's import). Within the stall
//! budget a HUP is the better reload: one master, one set of workers, and what the developer
//! loop wants. Above it, an upgrade (USR2) keeps the old master serving until every new worker
//! has booted, at the cost of two sets of workers meanwhile. Some masters cannot be upgraded
//! safely (see [`Room`]); those keep to HUP, and the reload line says why. The decision is a
//! pure function of the facts, read once per reload.
//!
//! The load time comes from the default preflight, which times Gunicorn's own `load()` (what a
//! new worker does before it accepts) in the check process, warm or cold alike.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::reload_plan::{Method, signal_name};
use crate::gunicorn::discover::MasterProcess;
use crate::gunicorn::preload::Preload;
use crate::gunicorn::procfs;
use crate::gunicorn::systemd_unit::show_property;
use crate::reload::systemd_handover::{self, Handover};

/// The longest stall a HUP may cause under `auto`: below what a user notices on one request.
pub const STALL_BUDGET: Duration = Duration::from_millis(50);

/// Parents that track the master by its PID and would lose it in an upgrade (the old master
/// exits; the new one is its child, reparented away from the supervisor).
const SUPERVISORS: &[&str] = &[
    "supervisord",
    "honcho",
    "circusd",
    "runsv",
    "s6-supervise",
    "forego",
];

/// What surrounds a master, as far as an upgrade is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surroundings {
    pub pid: u32,
    /// PID 1 of its PID namespace (a container's first process): its exit ends the container.
    pub container_init: bool,
    /// The parent's name when it is a process supervisor (see [`SUPERVISORS`]).
    pub supervisor: Option<String>,
    /// It has a controlling terminal: started from a shell, whose Ctrl-C reaches its process
    /// group. The new master of an upgrade would outlive the shell's job, orphaned.
    pub terminal: bool,
    pub handover: Handover,
    /// The `ExecReload=` of the unit whose main process it is runs `hupwatch reload`.
    pub unit_reloads_with_hupwatch: bool,
}

impl Surroundings {
    /// Read from /proc (and, for a unit's main process reloaded from outside, `systemctl`).
    pub fn of(master: &MasterProcess) -> Self {
        let stat = procfs::read_stat(master.pid).ok();
        let parent = procfs::read_stat(master.ppid).ok().map(|p| p.comm);
        let handover = systemd_handover::decide_for(master.pid, master.ppid);
        let unit_reloads_with_hupwatch = match &handover {
            Handover::Refuse { unit, .. } => {
                show_property(unit, "ExecReload", Duration::from_secs(5))
                    .is_some_and(|v| runs_hupwatch_reload(&v))
            }
            _ => false,
        };
        Self {
            pid: master.pid,
            container_init: procfs::read_ns_pid(master.pid) == Some(1),
            supervisor: parent.filter(|p| SUPERVISORS.contains(&p.as_str())),
            terminal: stat.is_some_and(|s| s.tty_nr != 0),
            handover,
            unit_reloads_with_hupwatch,
        }
    }
}

/// `systemctl show -p ExecReload` text naming a `hupwatch … reload` command.
fn runs_hupwatch_reload(exec_reload: &str) -> bool {
    exec_reload.split(" ; ").any(|field| {
        field.contains("argv[]=")
            && field.contains("hupwatch")
            && field.split_whitespace().any(|w| w == "reload")
    })
}

/// What the surroundings leave open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    Either,
    /// An upgrade cannot work here, for this reason.
    HupOnly(String),
    /// A systemd unit's main process, reloaded from outside its unit: only the unit's own
    /// `ExecReload=` can move its main PID, so `systemctl reload UNIT` does the reload.
    ThroughUnit {
        unit: String,
    },
}

impl Room {
    /// For `status`: what `--strategy auto` would do with this master, the load time aside.
    pub fn describe(&self) -> String {
        match self {
            Room::Either => format!(
                "HUP if the app loads within {}ms, else upgrade",
                STALL_BUDGET.as_millis()
            ),
            Room::HupOnly(why) => format!("HUP only: {why}"),
            Room::ThroughUnit { unit } => format!("systemctl reload {unit}"),
        }
    }
}

/// For `status`: what `auto` would do with a master, the load time aside — the same rules as
/// [`choose`], in words.
pub fn describe_auto(room: &Room, preload: &Preload) -> String {
    match (room, preload) {
        (Room::Either, Preload::Yes(_)) => "upgrade (it preloads the app)".into(),
        (Room::Either, Preload::Unknown(_)) => "upgrade (preload_app unknown)".into(),
        (Room::HupOnly(why), Preload::Yes(_)) => {
            format!("nothing: it preloads the app and an upgrade cannot work here: {why}")
        }
        (Room::HupOnly(why), Preload::Unknown(_)) => {
            format!("HUP only, unproven (preload_app unknown): {why}")
        }
        _ => room.describe(),
    }
}

pub fn room(s: &Surroundings) -> Room {
    match &s.handover {
        Handover::Refuse { unit, .. } if s.unit_reloads_with_hupwatch => {
            return Room::ThroughUnit { unit: unit.clone() };
        }
        Handover::Refuse { unit, why } => {
            return Room::HupOnly(format!(
                "master {} is the main process of {unit} and {why}; give the unit \
                 ExecReload=hupwatch reload --pid $MAINPID and NotifyAccess=all \
                 (see examples/gunicorn-app.service)",
                s.pid
            ));
        }
        Handover::NotMain | Handover::Announce { .. } => {}
    }
    if s.container_init {
        Room::HupOnly(format!(
            "master {} is PID 1 of its container, which ends when it exits",
            s.pid
        ))
    } else if let Some(sup) = &s.supervisor {
        Room::HupOnly(format!(
            "master {} runs under {sup}, which would lose track of a new master",
            s.pid
        ))
    } else if s.terminal {
        Room::HupOnly(format!(
            "master {} was started from a terminal: a new master would be orphaned and deaf to Ctrl-C",
            s.pid
        ))
    } else {
        Room::Either
    }
}

/// How one reload goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One signal to the master (HUP, or the `--signal` given).
    Signal(Signal),
    /// USR2, a new master beside the old one, then TERM to the old one.
    Upgrade,
    /// `systemctl reload UNIT`, whose `ExecReload=` hupwatch does the reload (see [`Room`]).
    UnitReload { unit: String },
}

impl Route {
    /// The signal the master receives first; `None` when hupwatch signals nothing itself.
    pub fn first_signal(&self) -> Option<Signal> {
        match self {
            Route::Signal(signal) => Some(*signal),
            Route::Upgrade => Some(Signal::SIGUSR2),
            Route::UnitReload { .. } => None,
        }
    }

    /// HUP alone makes Gunicorn replace its workers under the same master: verification
    /// must see new ones.
    pub fn replaces_workers(&self) -> bool {
        *self == Route::Signal(Signal::SIGHUP)
    }

    /// How the log and the reload lock's record name it: `HUP`, `USR1`, `upgrade`.
    pub fn action(&self) -> &'static str {
        match self {
            Route::Signal(signal) => signal_name(*signal),
            Route::Upgrade => "upgrade",
            Route::UnitReload { .. } => "systemctl reload",
        }
    }
}

/// The route of one reload and, when hupwatch chose it (`auto`, or a unit's own reload), why:
/// the end of the reload line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub route: Route,
    pub why: Option<String>,
    /// What `why` leaves to a field of its own: why `preload_app` could not be read, and the
    /// ways to certainty. In `why` it made a reload line of ~700 characters (issue 20).
    pub detail: Option<String>,
    /// A HUP to a master that may preload the app: verification cannot prove that the new
    /// workers loaded new code, so the reload is reported with a warning (`why` says it).
    pub unproven: bool,
}

/// A master no strategy can reload with new code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `--strategy hup` on a preloading master (where that was read).
    PreloadNeedsUpgrade { source: String },
    /// `auto` on a preloading master that cannot be upgraded, for this reason.
    PreloadCannotUpgrade { source: String, why: String },
}

/// The decision. `room` is `None` for a fixed signal (nothing around the master matters);
/// `load` is the app's load time if the preflight measured it. A master that *may* preload
/// ([`Preload::Unknown`]) is upgraded where `auto` may choose; a HUP it gets anyway (asked
/// for, or the only way) goes out `unproven`: refusing it would refuse every setproctitle
/// master without a config file.
pub fn choose(
    method: Method,
    room: Option<&Room>,
    preload: &Preload,
    load: Option<Duration>,
) -> Result<Choice, Refusal> {
    let through_unit = match room {
        Some(Room::ThroughUnit { unit }) => Some(unit.clone()),
        _ => None,
    };
    let fixed = |route| {
        Ok(Choice {
            route,
            why: None,
            detail: None,
            unproven: false,
        })
    };
    match (method, preload) {
        (Method::Signal(Signal::SIGHUP), Preload::Yes(source)) => {
            Err(Refusal::PreloadNeedsUpgrade {
                source: source.clone(),
            })
        }
        (Method::Signal(Signal::SIGHUP), Preload::Unknown(unknown)) => {
            Ok(unproven_hup(format!("HUP as asked: {UNPROVEN}"), unknown))
        }
        (Method::Signal(signal), _) => fixed(Route::Signal(signal)),
        (Method::Upgrade, _) => match through_unit {
            Some(unit) => Ok(through(unit)),
            None => fixed(Route::Upgrade),
        },
        (Method::Auto, _) => match room.unwrap_or(&Room::Either) {
            Room::ThroughUnit { unit } => Ok(through(unit.clone())),
            Room::HupOnly(why) => match preload {
                Preload::Yes(source) => Err(Refusal::PreloadCannotUpgrade {
                    source: source.clone(),
                    why: why.clone(),
                }),
                Preload::Unknown(unknown) => Ok(unproven_hup(
                    format!("auto chose HUP: {why}; {UNPROVEN}"),
                    unknown,
                )),
                Preload::No => Ok(Choice {
                    route: Route::Signal(Signal::SIGHUP),
                    why: Some(format!("auto chose HUP: {why}")),
                    detail: None,
                    unproven: false,
                }),
            },
            Room::Either => Ok(by_load_time(preload, load)),
        },
    }
}

/// The route when no preflight can check the release because nothing tells which app the
/// master serves (`looked`: every place tried): an upgrade checks it anyway — a new master
/// that cannot load the release never takes over and the old one serves on — so `auto`
/// (where an upgrade can work) and `upgrade` go ahead with it. `None` where only a HUP is
/// possible: a HUP of a release that fails to load takes the whole site down, so that stays
/// refused.
pub fn upgrade_as_preflight(method: Method, room: Option<&Room>, looked: &str) -> Option<Choice> {
    let by = match (method, room) {
        (Method::Upgrade, _) => "upgrade as asked",
        (Method::Auto, Some(Room::Either)) => "auto chose upgrade",
        _ => return None,
    };
    Some(Choice {
        route: Route::Upgrade,
        why: Some(format!(
            "{by}: the upgrade is the preflight (a new master that cannot load the release never \
             takes over); the framework checks are skipped"
        )),
        detail: Some(format!(
            "cannot tell which app the master serves: {looked}; the framework checks (Django's \
             system checks, the health request) need it: pass --app MODULE:CALLABLE to run them"
        )),
        unproven: false,
    })
}

/// The warning a HUP to a master that may preload carries.
const UNPROVEN: &str = "preload_app unknown: this HUP cannot prove that the new workers loaded \
     the new code (with preload_app they fork from the old one)";

/// Why `preload_app` is unknown (`unknown`), and the ways to certainty.
fn unproven_hup(why: String, unknown: &str) -> Choice {
    Choice {
        route: Route::Signal(Signal::SIGHUP),
        why: Some(why),
        detail: Some(format!(
            "{unknown}; use --strategy upgrade, or write preload_app = False in the master's \
             config file (gunicorn.conf.py in its working directory)"
        )),
        unproven: true,
    }
}

fn through(unit: String) -> Choice {
    Choice {
        why: Some(format!(
            "through systemctl reload {unit}: the master is its main process and its ExecReload= runs hupwatch"
        )),
        route: Route::UnitReload { unit },
        detail: None,
        unproven: false,
    }
}

fn by_load_time(preload: &Preload, load: Option<Duration>) -> Choice {
    let (route, why, detail) = match (preload, load) {
        (Preload::Yes(source), _) => (
            Route::Upgrade,
            format!(
                "upgrade: the master preloads the app ({source}), so a HUP would load no new code"
            ),
            None,
        ),
        (Preload::Unknown(unknown), _) => (
            Route::Upgrade,
            "upgrade: preload_app unknown: a HUP might load no new code".to_string(),
            Some(unknown.clone()),
        ),
        (Preload::No, load) => return by_measured_load(load),
    };
    Choice {
        route,
        why: Some(format!("auto chose {why}")),
        detail,
        unproven: false,
    }
}

fn by_measured_load(load: Option<Duration>) -> Choice {
    let budget = STALL_BUDGET.as_millis();
    let (route, why) = match load {
        Some(t) if t <= STALL_BUDGET => (
            Route::Signal(Signal::SIGHUP),
            format!(
                "HUP: the app loads in {}ms, within the {budget}ms stall budget",
                t.as_millis()
            ),
        ),
        Some(t) => (
            Route::Upgrade,
            format!(
                "upgrade: the app loads in {}ms, a HUP would stall requests that long (budget {budget}ms)",
                t.as_millis()
            ),
        ),
        None => (
            Route::Upgrade,
            "upgrade: the app's load time is unknown (no preflight measured it: --no-preflight or a custom --preflight), so a HUP could stall requests for all of it".to_string(),
        ),
    };
    Choice {
        route,
        why: Some(format!("auto chose {why}")),
        detail: None,
        unproven: false,
    }
}

#[cfg(test)]
#[path = "strategy_choice_tests.rs"]
mod tests;
