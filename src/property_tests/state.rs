//! Property tests of the debouncer and the reload verdict, and the regressions they found.

use super::*;

// ---------------------------------------------------------------------------------------------
// The debouncer and the reload verdict
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Change,
    ChangeWith(Duration),
    TakeDue,
}

/// Durations up to a day: the timing semantics under test hold for what the config accepts.
fn ms(max: u64) -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => (0..max).prop_map(Duration::from_millis),
        1 => prop::sample::select(vec![0u64, 1, max]).prop_map(Duration::from_millis),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn debouncer_fires_once_per_burst_within_max_wait(
        quiet in ms(86_400_000),
        max_wait in ms(86_400_000),
        ops in vec((ms(3_000), prop_oneof![
            3 => Just(Op::Change),
            1 => ms(10_000).prop_map(Op::ChangeWith),
            3 => Just(Op::TakeDue),
        ]), 0..40),
    ) {
        let mut d = Debouncer::new(quiet, max_wait);
        let mut now = Instant::now();
        let mut first: Option<Instant> = None;
        let mut changed_since_fire = false;
        prop_assert_eq!(d.deadline(), None);
        for (advance, op) in ops {
            now += advance;
            match op {
                Op::Change | Op::ChangeWith(_) => {
                    if let Op::ChangeWith(q) = op {
                        d.on_change_with(now, q);
                    } else {
                        d.on_change(now);
                    }
                    first.get_or_insert(now);
                    changed_since_fire = true;
                }
                Op::TakeDue => {
                    let before = d.deadline();
                    let fired = d.take_due(now);
                    prop_assert_eq!(fired, before.is_some_and(|t| now >= t));
                    if fired {
                        prop_assert!(changed_since_fire, "fired twice without a change");
                        changed_since_fire = false;
                        first = None;
                        prop_assert_eq!(d.deadline(), None);
                    }
                }
            }
            match (d.deadline(), first) {
                (Some(deadline), Some(first)) => {
                    prop_assert!(deadline <= first + max_wait);
                    prop_assert!(deadline >= first);
                }
                (None, None) => {}
                (deadline, first) => {
                    return Err(TestCaseError::fail(format!(
                        "deadline {deadline:?} with first change {first:?}"
                    )));
                }
            }
        }
    }

    #[test]
    fn judge_replaced_means_disjoint_enough_booted_and_alive(
        old in btree_set(0u32..24, 0..6),
        current in btree_set(0u32..24, 0..8),
        booting in 0usize..3,
        alive in any::<bool>(),
    ) {
        let verdict = judge(&old, &current, booting, alive);
        let replaced = alive
            && current.is_disjoint(&old)
            && current.len() >= old.len().max(1)
            && booting == 0;
        prop_assert_eq!(verdict == Progress::Replaced, replaced);
        prop_assert_eq!(verdict == Progress::MasterGone, !alive);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: real panics found by the properties above (src/ is not fixed here)
// ---------------------------------------------------------------------------------------------

/// `gunicorn -é` (any Gunicorn-shaped cmdline with a short flag followed by a non-ASCII
/// character, or by a non-UTF-8 byte, which `split_cmdline` turns into the 3-byte U+FFFD)
/// panics in `parse_args` at `&arg[..2]`: byte index 2 is not a char boundary. Discovery
/// parses the cmdline of every process whose comm starts with gunicorn/python/pypy, so any
/// local user running such a process makes `status`, `reload` and `watch` panic.
#[test]
fn regression_gunicorn_cmdline_short_flag_followed_by_multibyte_char() {
    let argv = ["gunicorn".to_string(), "-é".to_string()];
    let _ = crate::gunicorn::cmdline::parse(&argv);
}

#[test]
fn regression_gunicorn_cmdline_short_flag_followed_by_invalid_utf8() {
    let argv = crate::gunicorn::procfs::split_cmdline(b"/usr/bin/python3\0-m\0gunicorn\0-\xff\0");
    let _ = crate::gunicorn::cmdline::parse(&argv);
}

/// `hupwatch watch --debounce 10000000000000000000s` was accepted and the first change then
/// panicked in `Debouncer::on_change_with` ("overflow when adding duration to instant"). Now the
/// flag (and the config key) refuse durations over 7 days, and the debouncer saturates anyway.
#[test]
fn regression_huge_debounce_is_refused_and_cannot_overflow() {
    for flag in ["--debounce", "--max-wait"] {
        let err = Cli::try_parse_from(["hupwatch", "watch", flag, "10000000000000000000s"])
            .expect_err("refused");
        assert!(err.to_string().contains("7 days"), "{err}");
    }
    let huge = Duration::from_secs(u64::MAX / 2);
    let mut d = Debouncer::new(huge, huge);
    d.on_change(Instant::now());
    assert!(d.deadline().is_some());
    assert!(!d.take_due(Instant::now()));
    d.on_change_with(Instant::now(), huge);
    let _ = d.deadline();
}

/// A config file with CRLF line endings (edited on Windows) and a non-ASCII comment panics
/// instead of reporting its validation error: `line_of_key` advances by `line.len() + 1` per
/// line, but `str::lines` also strips the `\r`, so the offset falls one byte short per CRLF line
/// and `text[..start + offset]` (config_file.rs, `line_of_key`) lands inside the `é`.
#[test]
fn regression_config_crlf_line_numbers_panic_inside_a_multibyte_char() {
    let text = "# a\r\n# b\r\n# café\r\nwatch = [\"/nonexistent\"]\r\n";
    let result = crate::config::config_file::parse(Path::new("/etc/hupwatch.toml"), text);
    let err = result.expect_err("the watch path is missing").to_string();
    assert!(err.contains("line 4"), "{err}");
}

/// The same miscount without the panic: with two CRLF lines before the key the error names
/// line 2 instead of line 3.
#[test]
fn regression_config_crlf_line_numbers_drift() {
    let text = "# a\r\n# b\r\nwatch = [\"/nonexistent\"]\r\n";
    let result = crate::config::config_file::parse(Path::new("/etc/hupwatch.toml"), text);
    let err = result.expect_err("the watch path is missing").to_string();
    assert!(err.contains("line 3"), "{err}");
}
