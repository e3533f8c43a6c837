//! The `varco` command line: `serve`, `check-config`, `demo`, `echo`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use varco::config::{Config, ConfigError, Mode};

#[derive(Parser)]
#[command(name = "varco", version, about = "Identity gateway for SPID, CIE and CNS", long_about = None)]
struct Cli {
    /// Human-readable logs instead of JSON.
    #[arg(long, global = true)]
    pretty: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem with the key that causes it.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded default: gateway + echo upstream on https://localhost:8443.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where development certificates are kept (created on first run).
        #[arg(long, default_value = "certs/dev")]
        certs_dir: PathBuf,
        /// A demo configuration file instead of the embedded one (must say `mode = "demo"`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run only the echo upstream (for benchmarks and experiments).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => match Config::load(&config) {
            Ok(cfg) => run(cfg, cli.pretty, None),
            Err(e) => fail_config(e),
        },
        Command::Demo {
            listen,
            certs_dir,
            config,
        } => demo(listen, certs_dir, config, cli.pretty),
        Command::Echo { listen } => runtime().map_or(ExitCode::FAILURE, |rt| {
            rt.block_on(async {
                match varco::demo::echo::spawn(listen).await {
                    Ok(addr) => {
                        eprintln!("echo upstream on http://{addr}");
                        let _ = tokio::signal::ctrl_c().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("varco echo: cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("varco: cannot start the runtime: {e}");
            None
        }
    }
}

fn fail_config(e: ConfigError) -> ExitCode {
    eprintln!("varco: invalid configuration\n{e}");
    ExitCode::from(2)
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load_unvalidated(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
    if lines.is_empty() {
        lines = varco::app::deep_check(&cfg);
    }
    if lines.is_empty() {
        println!("{}: configuration OK", path.display());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s):", path.display(), lines.len());
        for l in lines {
            eprintln!("  - {l}");
        }
        ExitCode::FAILURE
    }
}

fn run(cfg: Config, pretty: bool, banner: Option<String>) -> ExitCode {
    let _log = varco::telemetry::init_logging(&cfg.log, pretty);
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        match varco::app::start(cfg).await {
            Ok(running) => {
                if let Some(b) = banner {
                    eprintln!("{b}");
                }
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("varco: cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo(listen: SocketAddr, certs_dir: PathBuf, config: Option<PathBuf>, pretty: bool) -> ExitCode {
    let tls = match varco::demo::certs::ensure_dev_tls(&certs_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("varco demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let echo = rt.block_on(varco::demo::echo::spawn(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    ))));
    let echo = match echo {
        Ok(a) => a,
        Err(e) => {
            eprintln!("varco demo: cannot start the echo upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match config {
        Some(path) => Config::load(&path),
        None => varco::demo::demo_config(listen, echo, &tls),
    };
    let cfg = match cfg {
        Ok(c) if c.mode == Mode::Demo => c,
        Ok(_) => {
            eprintln!("varco demo: the configuration must say mode = \"demo\"");
            return ExitCode::from(2);
        }
        Err(e) => return fail_config(e),
    };
    let _log = varco::telemetry::init_logging(&cfg.log, pretty);
    let banner = format!(
        "\nvarco demo is running: open https://localhost:{}/ (development certificate: {})\n\
         echo upstream on http://{echo}; metrics at /_varco/metrics. Ctrl-C to stop.\n",
        listen.port(),
        tls.ca.display()
    );
    rt.block_on(async move {
        match varco::app::start(cfg).await {
            Ok(running) => {
                eprintln!("{banner}");
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("varco demo: cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
