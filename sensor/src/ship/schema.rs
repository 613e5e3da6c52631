//! The central schema, created and upgraded by versioned migrations, and its retention sweep.
//!
//! Every sensor runs [`migrate`] when its shipper starts: it creates the database and a
//! `schema_migrations` table, reads the highest version applied, and applies the later
//! migrations in order, recording each. Statements are idempotent (`IF NOT EXISTS`) so two
//! sensors migrating at once do no harm; 18.16 has no `ADD COLUMN IF NOT EXISTS`, so a column
//! added later is a [`Step::AddColumn`], checked against `system.columns` first.
//!
//! Tables (see docs/CENTRAL.md for the cluster form):
//! - `exchanges`: one row per exchange and host, the NDJSON vocabulary as columns plus
//!   `host_id`, `exchange_id` and `ts_ns`. `ReplacingMergeTree` ordered by
//!   `(session_id, ts, host_id, exchange_id)`: a row shipped twice (a retried insert, a
//!   restart after a crash) has the same key and collapses into one at merge time; queries
//!   read with `FINAL`, so they count it once before that too.
//! - `sessions`: one row per session part and host, `ReplacingMergeTree(version)` ordered by
//!   `(session_id, host_id)`: the row with the highest version (the request count) wins.
//!
//! Both are partitioned by day. Retention drops whole partitions ([`drop_expired`]): 18.16 has
//! no table TTL (19.6 added it), and dropping a partition is what a TTL does on a day-partitioned
//! table anyway.

use super::{CentralError, client::Client, client::ExternalTable};

/// One change to the schema. `{db}` stands for the configured database (a plain identifier,
/// checked by the configuration).
pub enum Step {
    Sql(&'static str),
    AddColumn {
        table: &'static str,
        column: &'static str,
        definition: &'static str,
    },
}

pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub steps: &'static [Step],
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "exchanges and sessions",
        steps: &[
            Step::Sql(
                "CREATE TABLE IF NOT EXISTS {db}.exchanges (
                host_id String,
                exchange_id String,
                ts DateTime('UTC'),
                ts_ns UInt64,
                session_id String,
                client_ip String,
                client_port UInt16,
                server_ip String,
                server_port UInt16,
                peer_ip String,
                peer_port UInt16,
                method Nullable(String),
                host Nullable(String),
                uri Nullable(String),
                endpoint Nullable(String),
                version Nullable(String),
                user_agent Nullable(String),
                referrer Nullable(String),
                request_content_type Nullable(String),
                response_content_type Nullable(String),
                status_code Nullable(UInt16),
                status_msg Nullable(String),
                request_body_len Nullable(UInt64),
                response_body_len Nullable(UInt64),
                ttfb_ms Nullable(Float64),
                duration_ms Nullable(Float64),
                request_truncated UInt8,
                response_truncated UInt8,
                gap UInt8,
                joined UInt8,
                upstream_ms Nullable(Float64),
                upstream_ip Nullable(String),
                upstream_port Nullable(UInt16),
                server_netns Nullable(UInt64),
                server_cgroup Nullable(String),
                params Nested(name String, value String)
            ) ENGINE = ReplacingMergeTree
            PARTITION BY toDate(ts)
            ORDER BY (session_id, ts, host_id, exchange_id)",
            ),
            Step::Sql(
                "CREATE TABLE IF NOT EXISTS {db}.sessions (
                host_id String,
                session_id String,
                version UInt64,
                start DateTime('UTC'),
                start_ns UInt64,
                end_ns UInt64,
                requests UInt64,
                key_kind String,
                key_name String,
                user Nullable(String),
                role Nullable(String),
                client_ips Array(String),
                user_agents Array(String),
                hosts Array(String),
                server_ips Array(String),
                endpoints Nested(name String, count UInt64),
                methods Nested(name String, count UInt64),
                statuses Nested(code UInt16, count UInt64),
                request_bytes UInt64,
                response_bytes UInt64,
                incomplete UInt64
            ) ENGINE = ReplacingMergeTree(version)
            PARTITION BY toDate(start)
            ORDER BY (session_id, host_id)",
            ),
        ],
    },
    Migration {
        version: 2,
        description: "attack findings, spec status, slow; session risk and signals",
        steps: &[
            // Findings and signals as JSON text: the same objects as the NDJSON and `--json`
            // output, readable on 18.16 (visitParam*) and current releases (JSONExtract*).
            Step::AddColumn {
                table: "exchanges",
                column: "attacks",
                definition: "String DEFAULT '[]'",
            },
            Step::AddColumn {
                table: "exchanges",
                column: "spec_status",
                definition: "Nullable(String)",
            },
            Step::AddColumn {
                table: "exchanges",
                column: "slow",
                definition: "UInt8 DEFAULT 0",
            },
            Step::AddColumn {
                table: "sessions",
                column: "risk",
                definition: "UInt8 DEFAULT 0",
            },
            Step::AddColumn {
                table: "sessions",
                column: "signals",
                definition: "String DEFAULT '[]'",
            },
            Step::AddColumn {
                table: "sessions",
                column: "attacks",
                definition: "String DEFAULT '[]'",
            },
        ],
    },
    Migration {
        version: 3,
        description: "slow requests per session",
        steps: &[Step::AddColumn {
            table: "sessions",
            column: "slow",
            definition: "UInt64 DEFAULT 0",
        }],
    },
    Migration {
        version: 4,
        description: "exchanges decoded from TLS plaintext",
        steps: &[Step::AddColumn {
            table: "exchanges",
            column: "tls",
            definition: "UInt8 DEFAULT 0",
        }],
    },
    Migration {
        version: 5,
        description: "HTTP/2 stream and gRPC fields of exchanges",
        steps: &[
            Step::AddColumn {
                table: "exchanges",
                column: "stream_id",
                definition: "Nullable(UInt32)",
            },
            Step::AddColumn {
                table: "exchanges",
                column: "grpc_status",
                definition: "Nullable(UInt16)",
            },
            Step::AddColumn {
                table: "exchanges",
                column: "grpc_request_messages",
                definition: "Nullable(UInt32)",
            },
            Step::AddColumn {
                table: "exchanges",
                column: "grpc_response_messages",
                definition: "Nullable(UInt32)",
            },
        ],
    },
];

/// The version the migrations above lead to.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn sql(client: &Client, template: &str) -> String {
    template.replace("{db}", client.database())
}

/// The highest migration applied (0: none).
pub fn current_version(client: &Client) -> Result<u32, CentralError> {
    #[derive(serde::Deserialize)]
    struct Row {
        version: u32,
    }
    let rows: Vec<Row> = client.select_all(
        &sql(
            client,
            "SELECT max(version) AS version FROM {db}.schema_migrations",
        ),
        &[],
    )?;
    Ok(rows.first().map_or(0, |r| r.version))
}

/// Brings the central schema to [`latest_version`]; returns the migrations applied.
pub fn migrate(client: &Client) -> Result<Vec<u32>, CentralError> {
    client.execute(&sql(client, "CREATE DATABASE IF NOT EXISTS {db}"))?;
    client.execute(&sql(
        client,
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
            version UInt32,
            description String,
            applied_at DateTime('UTC')
        ) ENGINE = ReplacingMergeTree ORDER BY version",
    ))?;
    let current = current_version(client)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        for step in migration.steps {
            match step {
                Step::Sql(text) => client.execute(&sql(client, text))?,
                Step::AddColumn {
                    table,
                    column,
                    definition,
                } => {
                    if !has_column(client, table, column)? {
                        client.execute(&format!(
                            "ALTER TABLE {}.{table} ADD COLUMN {column} {definition}",
                            client.database()
                        ))?;
                    }
                }
            }
        }
        let row = serde_json::json!({
            "version": migration.version,
            "description": migration.description,
            "applied_at": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        client.insert("schema_migrations", format!("{row}\n").as_bytes())?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn has_column(client: &Client, table: &str, column: &str) -> Result<bool, CentralError> {
    #[derive(serde::Deserialize)]
    struct Row {
        n: u64,
    }
    let params = ExternalTable {
        name: "params",
        structure: "db String, tbl String, col String",
        rows: vec![serde_json::json!({
            "db": client.database(), "tbl": table, "col": column,
        })],
    };
    let rows: Vec<Row> = client.select_all(
        "SELECT count() AS n FROM system.columns \
         WHERE database = (SELECT db FROM params) AND table = (SELECT tbl FROM params) \
         AND name = (SELECT col FROM params)",
        &[params],
    )?;
    Ok(rows.first().is_some_and(|r| r.n > 0))
}

/// Drops the day partitions of `exchanges` and `sessions` older than `cutoff_day` (days since
/// the epoch); returns how many were dropped.
pub fn drop_expired(client: &Client, cutoff_day: u64) -> Result<usize, CentralError> {
    #[derive(serde::Deserialize)]
    struct Row {
        table: String,
        partition: String,
    }
    let params = ExternalTable {
        name: "params",
        structure: "db String",
        rows: vec![serde_json::json!({ "db": client.database() })],
    };
    let rows: Vec<Row> = client.select_all(
        "SELECT DISTINCT table, partition FROM system.parts \
         WHERE database = (SELECT db FROM params) AND table IN ('exchanges', 'sessions') \
         AND active",
        &[params],
    )?;
    let mut dropped = 0;
    for row in rows {
        // The partition is written into the statement, so only a well-formed date is.
        let Some(day) = days_from_date(&row.partition) else {
            continue;
        };
        if day >= cutoff_day || !matches!(row.table.as_str(), "exchanges" | "sessions") {
            continue;
        }
        client.execute(&format!(
            "ALTER TABLE {}.{} DROP PARTITION '{}'",
            client.database(),
            row.table,
            row.partition
        ))?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Days since the epoch of `YYYY-MM-DD` (digits and dashes only), else None.
fn days_from_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !well_formed {
        return None;
    }
    let time = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
    let secs = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(secs / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_dates_are_partitions() {
        assert_eq!(days_from_date("1970-01-02"), Some(1));
        assert_eq!(days_from_date("2023-11-14"), Some(19_675));
        for bad in [
            "2023-11-1",
            "2023-11-14'",
            "x023-11-14",
            "2023/11/14",
            "2023-13-40",
        ] {
            assert_eq!(days_from_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_increase() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(latest_version(), *versions.last().unwrap());
    }
}
