//! Turning the model flags into a loaded model.

use std::path::PathBuf;

use anyhow::Context;

use crate::{
    cli::{CaptionOptions, ModelArgs},
    device,
    models::{self, Backend, LoadOptions, Model, blip},
};

/// A located model: its directory and the name results carry.
pub struct Located {
    pub dir: PathBuf,
    pub name: String,
    pub device: candle_core::Device,
}

/// Finds the model's `files` (downloading them from the hub if asked) and
/// opens the device. Blocking.
pub fn locate(args: &ModelArgs, files: &'static [&'static str]) -> anyhow::Result<Located> {
    let device = device::parse(&args.device)?;
    let (dir, name) = match (&args.model_dir, &args.hub_repo) {
        (Some(dir), _) => {
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string());
            (models::files::local(dir, files)?, name)
        }
        (None, Some(repo)) => (
            models::files::from_hub(repo, &args.hub_revision, files)?,
            repo.clone(),
        ),
        (None, None) => anyhow::bail!("pass --model-dir or --hub-repo"),
    };
    Ok(Located { dir, name, device })
}

pub fn limits(opts: &CaptionOptions) -> blip::Limits {
    blip::Limits {
        max_tokens: usize::from(opts.max_tokens),
        min_tokens: 0,
    }
}

/// Locates and loads the model serving `task`. Blocking.
pub fn model_for_task(
    task: &str,
    args: &ModelArgs,
    caption: &CaptionOptions,
) -> anyhow::Result<(Box<dyn Model>, PathBuf)> {
    let spec = schema::known_task(task).with_context(|| format!("unknown task {task}"))?;
    let backend =
        Backend::for_task(task).with_context(|| format!("task {task} has no model backend"))?;
    if let Backend::Null { side } = backend {
        return Ok((
            Box::new(models::Null::new(side)),
            PathBuf::from("(no model)"),
        ));
    }
    let at = locate(args, backend.files())?;
    let opts = LoadOptions {
        spec,
        name: at.name,
        prompt: caption.prompt.clone(),
        limits: limits(caption),
        dtype: caption.dtype.dtype(),
    };
    let model = models::load(backend, &at.dir, &at.device, &opts)
        .with_context(|| format!("cannot load the model in {}", at.dir.display()))?;
    Ok((model, at.dir))
}
