//! `hupwatch@.service` as shipped: two instances, each reading its own
//! `<config dir>/<instance>.toml` (the drop-in replaces only `/etc/hupwatch/%i.toml`'s
//! directory and the binary's path), each reloading only its own app's master, and each
//! `systemctl reload` re-reading only its own instance's config.

use crate::sandbox::Systemd;
use crate::service::wait_for_body;
use crate::support::{AppDir, host_shared};
use crate::units::{Units, app_section, free_port};

#[test]
fn two_template_instances_each_reload_their_own_app() {
    let Some(sd) = Systemd::session() else { return };
    let _host = host_shared();
    let (a, b, etc) = (
        AppDir::named("sd-ta"),
        AppDir::named("sd-tb"),
        AppDir::named("sd-tetc"),
    );
    a.write_app("a-1");
    b.write_app("b-1");
    let mut units = Units::new(&sd);
    let (port_a, port_b) = (free_port(), free_port());
    let master_a = {
        let unit = units.gunicorn("ta", &a, port_a);
        units.main_pid(&unit)
    };
    let master_b = {
        let unit = units.gunicorn("tb", &b, port_b);
        units.main_pid(&unit)
    };
    std::fs::write(etc.join("shop.toml"), app_section("shop", &a)).unwrap();
    std::fs::write(etc.join("blog.toml"), app_section("blog", &b)).unwrap();
    units.hupwatch_template(etc.path());
    units.start("hupwatch@shop.service");
    units.start("hupwatch@blog.service");
    for instance in ["hupwatch@shop.service", "hupwatch@blog.service"] {
        assert_eq!(sd.show(instance, "ActiveState"), "active");
        assert_eq!(sd.show(instance, "StatusText"), "watching 1 app(s)");
    }
    // Each instance's `systemctl reload` reaches that instance's daemon (its own control
    // socket, `/run/hupwatch/watch-<pid>`) and no other.
    sd.systemctl(&["reload", "hupwatch@shop.service"]);
    let shop_pid = sd.show("hupwatch@shop.service", "MainPID");
    sd.wait_for_journal(
        "hupwatch@shop.service",
        &format!("hupwatch watch (PID {shop_pid}): config reloaded from"),
        1,
    );
    let blog = sd.journal(&["-u", "hupwatch@blog.service"]);
    assert!(!blog.contains("re-reading the config file"), "{blog}");

    a.replace_app("a-2");
    sd.wait_for_journal(
        "hupwatch@shop.service",
        &format!("reloaded master {master_a}"),
        1,
    );
    wait_for_body(port_a, "a-2");
    b.replace_app("b-2");
    sd.wait_for_journal(
        "hupwatch@blog.service",
        &format!("reloaded master {master_b}"),
        1,
    );
    wait_for_body(port_b, "b-2");
    let shop = sd.journal(&["-u", "hupwatch@shop.service"]);
    assert!(!shop.contains(&format!("master {master_b}")), "{shop}");
    let blog = sd.journal(&["-u", "hupwatch@blog.service"]);
    assert!(!blog.contains(&format!("master {master_a}")), "{blog}");
}
