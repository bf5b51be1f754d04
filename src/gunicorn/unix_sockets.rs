//! Unix sockets seen from /proc: which ones a process holds (`/proc/PID/fd`) and which of a
//! `/proc/net/unix` table are listening stream sockets with a path. Both Gunicorn's control
//! socket (`control_socket`) and a `hupwatch run`'s (`report::control::client`) are found
//! this way, from the owner's side, since a path alone can lead to another process.

use std::collections::HashSet;
use std::path::PathBuf;

/// The inodes of the sockets `pid` holds (`/proc/PID/fd/N -> socket:[INODE]`).
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Listening Unix stream sockets with a file-system path, from a /proc/net/unix table:
/// `Num RefCount Protocol Flags Type St Inode Path`. Listening is the `__SO_ACCEPTCON` bit
/// (`00010000`) of Flags, tested as a bit rather than as the whole field; Type `0001` is
/// `SOCK_STREAM`. A connection on the same path (St `03`, no flag) and an abstract name (`@…`)
/// are left out.
pub fn listening_paths(table: &str) -> Vec<(u64, PathBuf)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (flags, kind, inode, path) = (f.get(3)?, f.get(4)?, f.get(6)?, f.get(7)?);
            let listening = u32::from_str_radix(flags, 16).ok()? & 0x0001_0000 != 0;
            (listening && *kind == "0001" && path.starts_with('/'))
                .then(|| Some((inode.parse().ok()?, PathBuf::from(path))))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_stream_sockets_with_a_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000008b6beb5f: 00000002 00000000 00010000 0001 01 464719 /tmp/g.ctl\n\
            000000008c45b5ff: 00000003 00000000 00000000 0001 03 464717\n\
            000000001c7c9f46: 00000003 00000000 00000000 0001 03 464718 /tmp/g.ctl\n\
            0000000011111111: 00000002 00000000 00010000 0001 01 5 @abstract\n\
            0000000022222222: 00000002 00000000 00010000 0002 01 6 /run/dgram\n";
        assert_eq!(
            listening_paths(table),
            vec![(464719, PathBuf::from("/tmp/g.ctl"))]
        );
    }

    #[test]
    fn a_listener_of_ours_is_found_listening_among_our_sockets() {
        let path =
            std::env::temp_dir().join(format!("hupwatch-inodes-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = socket_inodes(std::process::id());
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        let found = listening_paths(&table)
            .into_iter()
            .any(|(inode, p)| p == path && held.contains(&inode));
        std::fs::remove_file(&path).unwrap();
        assert!(found, "{} not found", path.display());
    }
}
