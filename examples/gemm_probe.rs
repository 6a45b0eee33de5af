use scratchnet::kernels::gemm::{matmul, MatRef};
use std::time::Instant;
fn run(label: &str, m: usize, k: usize, n: usize, a_t: bool, b_t: bool) {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let reps = 2000;
    let am = if a_t { MatRef::row_major(&a, k, m).t() } else { MatRef::row_major(&a, m, k) };
    let bm = if b_t { MatRef::row_major(&b, n, k).t() } else { MatRef::row_major(&b, k, n) };
    let t = Instant::now();
    for _ in 0..reps {
        matmul(am, bm, &mut c, false);
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!("{label:<28} {m}x{k}x{n} a_t={a_t} b_t={b_t}: {:.1} us, {:.1} GFLOP/s", s * 1e6, 2.0 * (m * k * n) as f64 / s / 1e9);
}
fn main() {
    run("dW = dY·Xcolᵀ (now)", 16, 1024, 27, false, true);
    run("dW = dY·Xrow", 16, 1024, 27, false, false);
    run("dWᵀ = Xcol·dYᵀ", 27, 1024, 16, false, true);
    run("dW = dY·Xcolᵀ (now) L2", 32, 256, 144, false, true);
    run("dW = dY·Xrow L2", 32, 256, 144, false, false);
    run("dWᵀ = Xcol·dYᵀ L2", 144, 256, 32, false, true);
    run("dXcol = Wᵀ·dY L2", 144, 32, 256, true, false);
    run("Y = W·Xcol L1", 16, 27, 1024, false, false);
    run("Y = W·Xrowᵀ L1", 16, 27, 1024, false, true);
}
