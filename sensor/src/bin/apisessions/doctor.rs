//! `apisessions doctor`: can this host run the sensor, and if not, what to do.

use std::io::{self, Write as _};

use anyhow::{Result, bail};
use apisessions::{
    config::Config,
    doctor::{self, Status},
};
use clap::Args;

use crate::args::{ConfigArg, DataDirArg};

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn doctor(args: DoctorArgs) -> Result<()> {
    let config = match &args.config.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let data_dir = args
        .data
        .resolve(config.as_ref().unwrap_or(&Config::default()));
    let checks = doctor::run(config.as_ref(), args.config.config.as_deref(), &data_dir);
    let mut out = io::stdout().lock();
    for check in &checks {
        writeln!(
            out,
            "{:<5} {:<15} {}",
            check.status.as_str(),
            check.what,
            check.detail
        )?;
        if let Some(fix) = &check.fix {
            writeln!(out, "{:<5} {:<15} fix: {fix}", "", "")?;
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        bail!(
            "{failed} of {} checks failed (see the fixes above)",
            checks.len()
        );
    }
    Ok(())
}
