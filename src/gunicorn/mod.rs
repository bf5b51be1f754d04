//! Gunicorn as hupwatch sees it from the outside, through /proc: which processes are Gunicorn
//! masters and workers (`procfs`, `process_tree`, `cmdline`), which one a command means
//! (`discover`), and what the master's runtime says about the code it will load (`master_env`:
//! interpreter, environment, working directory, `preload_app`), and whether a worker has
//! loaded the app (`heartbeat`).

pub mod app_spec;
pub mod cmdline;
pub mod control_socket;
pub mod discover;
pub mod heartbeat;
pub mod master_choice;
pub mod master_env;
pub mod preload;
pub mod preload_memory;
pub mod process_tree;
pub mod procfs;
pub mod systemd_unit;
pub mod unix_sockets;
