//! The cold check: `python -m gunicorn --check-config APP` (or `--preflight CMD`) started for
//! one plan, run to completion or its timeout, its output read for the verdict. The warm
//! checker falls back to it whenever its own answer cannot be trusted.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bounded_wait::{Cancel, finish_in_group};
use crate::preflight::error::{PreflightError, tail};
use crate::preflight::framework_check;
use crate::preflight::plan::{Passed, Plan, switch_user};

/// Run the check to completion or timeout.
pub fn run(plan: &Plan, timeout: Duration) -> Result<Passed, PreflightError> {
    run_with(plan, timeout, false, None)
}

/// `run`, given up (the check's group killed, `TimedOut` returned) once `cancel` is set:
/// `hupwatch run` stopping abandons a check in flight.
pub fn run_cancellable(
    plan: &Plan,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Passed, PreflightError> {
    run_with(plan, timeout, false, Some(cancel))
}

/// `run` at the lowest CPU priority: a survey of what the app reads while loading, made while
/// a new generation already serves, must not take CPU from the requests it serves.
pub fn run_idle(plan: &Plan, timeout: Duration, cancel: &Cancel) -> Result<Passed, PreflightError> {
    run_with(plan, timeout, true, Some(cancel))
}

fn run_with(
    plan: &Plan,
    timeout: Duration,
    idle: bool,
    cancel: Option<&Cancel>,
) -> Result<Passed, PreflightError> {
    let started = Instant::now();
    let spawn_err = |source| PreflightError::Spawn {
        program: plan.program.display().to_string(),
        source,
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let (args, script_env) = framework_check::cold_invocation(plan);
    let mut cmd = Command::new(&plan.program);
    cmd.args(&args)
        .current_dir(&plan.dir)
        .env_clear()
        .envs(plan.env.iter().chain(&script_env).map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(spawn_err)?)
        .stderr(writer)
        .process_group(0);
    if let Some(creds) = &plan.creds {
        switch_user(&mut cmd, creds);
    }
    if idle {
        // SAFETY: setpriority is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    drop(cmd); // closes our copies of the pipe's write end, so the reader sees EOF
    let (status, output) = finish_in_group(child, reader, started + timeout, cancel);
    let tail = tail(&output);
    match status {
        Some(s) if s.success() => {
            let concluded = framework_check::conclude(plan, &output)?;
            Ok(Passed {
                took: started.elapsed(),
                load: concluded.load,
                loaded: concluded.loaded,
            })
        }
        Some(s) => Err(PreflightError::failed(&plan.dir, &s.to_string(), &output)),
        None => Err(PreflightError::TimedOut {
            dir: plan.dir.clone(),
            timeout,
            tail,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shell(script: &str) -> Plan {
        Plan {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            dir: PathBuf::from("/"),
            env: Vec::new(),
            creds: None,
            framework: None,
            describe: String::new(),
        }
    }

    /// The group is killed at the timeout; a helper in a session of its own survives that.
    #[test]
    fn a_helper_holding_the_output_does_not_hold_a_timed_out_check() {
        let started = Instant::now();
        let result = run(
            &shell("echo importing; setsid sleep 10 & exec sleep 30"),
            Duration::from_secs(1),
        );
        let took = started.elapsed();
        match result {
            Err(PreflightError::TimedOut { tail, .. }) => assert!(tail.contains("importing")),
            other => panic!("{other:?}"),
        }
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    /// The check exited 0, its helper still holds the pipe.
    #[test]
    fn a_helper_left_by_a_passing_check_does_not_hold_it() {
        let started = Instant::now();
        let result = run(&shell("echo ok; sleep 5 &"), Duration::from_secs(20));
        let took = started.elapsed();
        assert!(result.is_ok(), "{result:?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}
