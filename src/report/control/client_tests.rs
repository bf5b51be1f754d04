//! Tests of the control client: which socket counts, whose answer is believed, giving up in time.

use super::*;

const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/hupwatch/run-77/control.sock
0000000000000000: 00000002 00000000 00010000 0001 01 4343 /tmp/other/control.sock
0000000000000000: 00000003 00000000 00000000 0001 03 4444 /run/hupwatch/run-77/control.sock
0000000000000000: 00000002 00000000 00010000 0001 01 4545 /run/hupwatch/watch-78/control.sock
0000000000000000: 00000002 00000000 00010000 0001 01 4646 /run/hupwatch/watch-x/control.sock
";

#[test]
fn only_a_held_listening_control_socket_in_a_process_directory_counts() {
    let held = |inodes: &[u64]| inodes.iter().copied().collect::<HashSet<_>>();
    assert_eq!(
        control_socket(TABLE, &held(&[4242])),
        Some((
            PathBuf::from("/run/hupwatch/run-77/control.sock"),
            PeerKind::Run
        ))
    );
    assert_eq!(
        control_socket(TABLE, &held(&[4545])),
        Some((
            PathBuf::from("/run/hupwatch/watch-78/control.sock"),
            PeerKind::Watch
        ))
    );
    assert_eq!(control_socket(TABLE, &held(&[4343])), None, "not a run dir");
    assert_eq!(control_socket(TABLE, &held(&[4646])), None, "no PID");
    assert_eq!(control_socket(TABLE, &held(&[4444])), None, "a connection");
    assert_eq!(control_socket(TABLE, &held(&[1])), None, "not its own");
}

#[test]
fn only_the_supervisor_itself_run_by_us_or_root_is_believed() {
    assert!(believed(77, 1000, 77, 1000));
    assert!(believed(77, 0, 77, 1000));
    assert!(!believed(78, 1000, 77, 1000), "another process of ours");
    assert!(!believed(77, 1001, 77, 1000), "another user's");
    assert!(!believed(0, 1000, 77, 1000));
}

#[test]
fn a_peer_outside_our_pid_namespace_is_named_so() {
    let forged = |peer_pid| ControlError::Forged {
        who: "hupwatch run",
        pid: 77,
        path: PathBuf::from("/run/hupwatch/run-77/control.sock"),
        peer_pid,
        peer_uid: 1000,
    };
    let hidden = forged(0).to_string();
    assert!(hidden.contains("outside this PID namespace"), "{hidden}");
    assert!(!hidden.contains("os error"), "{hidden}");
    assert!(
        forged(78)
            .to_string()
            .contains("answered by PID 78, uid 1000")
    );
}

#[test]
fn a_connection_to_a_full_backlog_gives_up_in_time() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let scratch = crate::scratch_dir::ScratchDir::new("control-backlog");
    let path = scratch.join("control.sock");
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let limit = Duration::from_millis(200);
    let mut held = Vec::new();
    let started = std::time::Instant::now();
    let e = loop {
        match connect_within(&path, limit) {
            Ok(stream) => held.push(stream),
            Err(e) => break e,
        }
        assert!(held.len() < 8, "the backlog never filled");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < limit * 4, "{:?}", started.elapsed());
}

#[test]
fn a_process_without_a_control_socket_is_no_peer() {
    assert!(ControlPeer::at(std::process::id()).is_none());
}
