//! SIGHUP: which settings of a re-read configuration file the running daemon takes at once, and
//! which wait for the next start.
//!
//! Applied at once (the stages take a new configuration without losing their state: open
//! flows, active sessions, abuse state and the inventory stay as they are):
//! `capture.ports`, `capture.exclude_ports`, `[sessions]`, `[[parameters]]`, `[secrets]`,
//! `[proxy]` except `join`/`join_window`, `[attacks]`, `[abuse]`. The ports reach the kernel's
//! port map and, through the same step, the flow table's and NAT stage's server ports (one set
//! the port policy keeps: [`crate::capture::ServerPorts`]).
//!
//! At the next start (they decide what is loaded and attached, or where state lives):
//! `capture.interfaces`, `capture.all_ports`, `capture.attach`, `capture.snaplen`,
//! `capture.ring_size`, `capture.body_cap`, `capture.decode_threads`, `capture.tls`, `capture.tls_ports`, `[storage]`, `[central]`, `[api]`, `[inventory]`,
//! `proxy.join`, `proxy.join_window`. The daemon logs which of these changed; they stay as
//! they were until it restarts.

use super::{CaptureOverrides, Config};

/// A re-read configuration, split into what the daemon applies now and what it cannot.
#[derive(Clone, Debug, PartialEq)]
pub struct Reload {
    /// The configuration in force after the reload: the new file's live settings over the
    /// running configuration's start-time ones.
    pub config: Config,
    /// Live settings that changed (e.g. `capture.ports`, `sessions`).
    pub applied: Vec<&'static str>,
    /// Start-time settings that changed, in force at the next start only.
    pub at_restart: Vec<&'static str>,
}

impl Reload {
    /// Splits `new` (already read and checked, with the command line's flags laid over it)
    /// against the `running` configuration.
    pub fn new(running: &Config, mut new: Config, overrides: &CaptureOverrides) -> Self {
        overrides.apply(&mut new);
        let mut config = running.clone();
        let mut applied = Vec::new();
        let mut at_restart = Vec::new();
        macro_rules! live {
            ($name:literal, $($field:ident).+) => {
                if config.$($field).+ != new.$($field).+ {
                    config.$($field).+ = new.$($field).+.clone();
                    applied.push($name);
                }
            };
        }
        macro_rules! restart {
            ($name:literal, $($field:ident).+) => {
                if config.$($field).+ != new.$($field).+ {
                    at_restart.push($name);
                }
            };
        }
        live!("capture.ports", capture.ports);
        live!("capture.exclude_ports", capture.exclude_ports);
        live!("sessions", sessions);
        live!("parameters", parameters);
        live!("secrets", secrets);
        live!("proxy.trusted", proxy.trusted);
        live!("proxy.trust_host_addresses", proxy.trust_host_addresses);
        live!("proxy.headers", proxy.headers);
        live!("attacks", attacks);
        live!("abuse", abuse);
        restart!("capture.interfaces", capture.interfaces);
        restart!("capture.all_ports", capture.all_ports);
        restart!("capture.attach", capture.attach);
        restart!("capture.snaplen", capture.snaplen);
        restart!("capture.ring_size", capture.ring_size);
        restart!("capture.body_cap", capture.body_cap);
        restart!("capture.decode_threads", capture.decode_threads);
        restart!("capture.tls", capture.tls);
        restart!("capture.tls_ports", capture.tls_ports);
        restart!("proxy.join", proxy.join);
        restart!("proxy.join_window", proxy.join_window);
        restart!("storage", storage);
        restart!("central", central);
        restart!("api", api);
        restart!("inventory", inventory);
        Self {
            config,
            applied,
            at_restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Ports;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn live_settings_apply_and_start_time_ones_wait() {
        let running = parse("[capture]\nports = [8080]\nsnaplen = 1000\n");
        let new = parse(
            "[capture]\nports = [8080, 9090]\nsnaplen = 2000\n\
             [sessions]\ninactivity_timeout = \"5m\"\n[storage]\nretention = \"1d\"\n",
        );
        let reload = Reload::new(&running, new, &CaptureOverrides::default());
        assert_eq!(reload.applied, ["capture.ports", "sessions"]);
        assert_eq!(reload.at_restart, ["capture.snaplen", "storage"]);
        assert_eq!(reload.config.capture.ports, Ports::List(vec![8080, 9090]));
        assert_eq!(
            reload.config.sessions.inactivity_timeout.as_secs(),
            5 * 60,
            "the new session timeout is in force"
        );
        assert_eq!(reload.config.capture.snaplen, 1000, "snaplen waits");
        assert_eq!(
            reload.config.storage, running.storage,
            "the running storage stays"
        );
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = "[capture]\nports = [80]\n[attacks]\nenabled = false\n";
        let reload = Reload::new(&parse(text), parse(text), &CaptureOverrides::default());
        assert!(reload.applied.is_empty() && reload.at_restart.is_empty());
        assert_eq!(reload.config, parse(text));
    }

    #[test]
    fn command_line_flags_still_win() {
        let running = parse("[capture]\nports = [8080]\n");
        let overrides = CaptureOverrides {
            ports: vec![8080],
            ..CaptureOverrides::default()
        };
        let reload = Reload::new(&running, parse("[capture]\nports = [1234]\n"), &overrides);
        assert!(reload.applied.is_empty(), "{:?}", reload.applied);
        assert_eq!(reload.config.capture.ports, Ports::List(vec![8080]));
    }
}
