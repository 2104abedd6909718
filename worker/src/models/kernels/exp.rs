//! `e^x` in f32 as plain arithmetic, so that loops over it vectorise: a
//! call to libm's `expf` is one value at a time, and was 7 % of BLIP's
//! captioning (softmax and GELU).

/// `e^x` within 2 ulp: Cody–Waite range reduction `x = n·ln 2 + r`, `|r| ≤
/// ln 2 / 2`, Cephes' degree-6 polynomial for `e^r`, and `2^n` built in
/// the exponent bits. Inputs are clamped to [−87, 88], so the result is a
/// normal number: `e^x` for x < −87 (−∞ included) comes out as e^−87 ≈
/// 1.6e-38, which GELU treats as the zero it stands for (the softmax
/// makes such weights exact zeros: `softmax.rs`). NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    // n is in [−126, 127]: a normal power of two. `rounded`'s bits are
    // those of 1.5·2²³ plus n, and shifting them by 23 leaves n + 127 in
    // the exponent field. Integer adds and shifts vectorise; `n as i32`
    // saturates, which LLVM did one lane at a time (16 scalar conversions
    // per vector of exps).
    y * f32::from_bits(rounded.to_bits().wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_within_two_ulp_of_the_exact_value() {
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let exact = f64::from(x).exp();
            let got = f64::from(exp(x));
            let ulp = f64::from(f32::EPSILON) * exact;
            assert!(
                (got - exact).abs() <= 2.0 * ulp,
                "exp({x}) = {got}, not {exact}"
            );
        }
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::NAN).is_nan());
    }
}
