//! The `scratchnet` binary, run as a user would.

use std::process::Command;

fn scratchnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args(args)
        .output()
        .expect("run scratchnet")
}

#[test]
fn gradcheck_prints_a_passing_row_for_every_layer_type() {
    let out = scratchnet(&["gradcheck", "--seed", "3"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("layer"), "{stdout}");
    for layer in [
        "ConvLayer",
        "MaxPoolLayer",
        "FlattenLayer",
        "ReluLayer",
        "FullLayer",
        "SoftMaxLayer",
        "CrossEntropyLayer",
        "Sequential",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(layer) && l.contains(" pass ")),
            "{layer} row missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("15 checks, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn unknown_flag_is_refused() {
    let out = scratchnet(&["gradcheck", "--sed", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sed"));
}
