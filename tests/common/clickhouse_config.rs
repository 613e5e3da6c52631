//! The configuration of a private `clickhouse-server` (Debian's package, 18.16; also read by
//! current releases): everything under one directory, loopback ports of its own, one
//! password-protected user, warnings-only logs, no systemd. Shared by the test fixture
//! (tests/common/clickhouse.rs) and `cargo xtask bench` (xtask/src/bench/central.rs, which
//! includes this file), so both run the server the same way. Only the standard library here.

use std::{fs, io, path::Path};

/// Writes `config.xml` and `users.xml` into `dir` (data, logs and temporary files go below it
/// too): HTTP on `http_port`, the native protocol on `tcp_port`, both on 127.0.0.1; the user
/// `user` with `password`, allowed from 127.0.0.1.
pub fn write_server_config(
    dir: &Path,
    http_port: u16,
    tcp_port: u16,
    user: &str,
    password: &str,
) -> io::Result<()> {
    let d = dir.display();
    fs::write(
        dir.join("config.xml"),
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>
"#
        ),
    )?;
    let xml_password = password
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    fs::write(
        dir.join("users.xml"),
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <{user}>
      <password>{xml_password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </{user}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
        ),
    )
}
