//! `scratchnet gradcheck`: a table of numerical-gradient checks for every layer type.

use scratchnet::gradcheck;
use std::process::ExitCode;

/// Options of `scratchnet gradcheck`.
#[derive(clap::Args)]
pub struct Args {
    /// Seed for the random inputs, weights and projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Prints one row per check; exits non-zero if any fails.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports = gradcheck::suite(args.seed);
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            let tensors = r
                .errors
                .iter()
                .map(|(name, e)| format!("{name} {e:.1e}"))
                .collect::<Vec<_>>()
                .join(", ");
            let verdict = if r.passed() { "pass" } else { "FAIL" };
            [
                r.name.clone(),
                format!("{:?}", r.input_shape),
                format!("{:.2e}", r.max_error()),
                verdict.to_string(),
                tensors,
            ]
        })
        .collect();
    let header = [
        "layer",
        "input shape",
        "max rel error",
        "result",
        "per tensor",
    ];
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate().take(4) {
            s.push_str(&format!("{cell:<w$}  ", w = widths[c]));
        }
        s.push_str(cells[4]);
        s
    };
    println!("{}", line(header));
    for r in &rows {
        println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let tolerance = reports.first().map_or(0.0, |r| r.tolerance);
    println!("\n{} checks, {} failed (tolerance {tolerance:.0e}, central differences in f64; forward differences for ties)", reports.len(), failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
