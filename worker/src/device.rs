use anyhow::{Context, bail};
use candle_core::Device;

/// Parses `cpu` or `cuda:N`.
pub fn parse(spec: &str) -> anyhow::Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = spec.strip_prefix("cuda:") else {
        bail!("device {spec:?} is neither `cpu` nor `cuda:N`");
    };
    let ordinal: usize = ordinal
        .parse()
        .with_context(|| format!("device {spec:?}: bad GPU index"))?;
    Device::new_cuda(ordinal)
        .with_context(|| format!("cannot open {spec} (is the worker built with --features cuda?)"))
}
