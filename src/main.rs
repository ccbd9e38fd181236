//! Entry point: flags -> configuration -> logging -> `app::run` -> exit code.

use std::process::ExitCode;

use yurthub::{app, cli, config::Config};

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_else(|| "yurthub".into());
    let rest: Vec<String> = args.collect();
    let cli = match cli::parse(&program, &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("yurthub: {}", early.output.trim_end());
                    ExitCode::from(2)
                }
            };
        }
    };
    if cli.version {
        println!("yurthub {}", app::VERSION);
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("yurthub: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match app::run(config) {
        // Threads still serving watches end with the process.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}
