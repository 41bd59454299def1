//! The `berth-cni` binary, exec'd by CNI runtimes under its type name: the configuration on
//! stdin, the `CNI_*` environment, the result or the error object on stdout.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

use berth_cni::env::{Command, Env};
use berth_cni::error::{CniError, IO_FAILURE};
use berth_cni::kernel::real::RealKernel;
use berth_cni::{Version, config, plugin};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(1 << 20)
        .read_to_end(&mut stdin);
    let version = config::peek_version(&stdin).unwrap_or(Version::LATEST);
    let outcome = read
        .map_err(|e| CniError::new(IO_FAILURE, "failed to read stdin", e.to_string()))
        .and_then(|_| Env::from_lookup(|k| std::env::var(k).ok()))
        .and_then(|env| {
            if env.command == Command::Version {
                return Ok(Some(plugin::version(&stdin)));
            }
            let kernel = RealKernel::new().map_err(|e| CniError::kernel(&e))?;
            plugin::run(&env, &stdin, &kernel)
        });
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(answer) => {
            if let Some(answer) = answer {
                let _ = writeln!(out, "{answer}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(version));
            eprintln!("berth-cni: {e}");
            ExitCode::FAILURE
        }
    }
}
