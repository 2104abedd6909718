//! A checkpoint's `preprocessor_config.json` (its Hugging Face image
//! processor): the normalisation the model applies, and a check that the
//! task's geometry, which the producer applies, is the processor's.

use std::path::Path;

use schema::{Fit, TaskSpec};
use serde::Deserialize;

use super::files::ModelError;

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct Sides {
    shortest_edge: Option<u32>,
    height: Option<u32>,
    width: Option<u32>,
}

/// A size as processors write it: an object, or (older files, e.g.
/// openai/clip-vit-base-patch32's) one number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Number(u32),
    Sides(Sides),
}

impl Size {
    /// As transformers reads a number: the shorter side for a resize that
    /// is followed by a crop, both sides otherwise.
    fn sides(&self, short: bool) -> Sides {
        match *self {
            Size::Number(n) if short => Sides {
                shortest_edge: Some(n),
                ..Sides::default()
            },
            Size::Number(n) => Sides {
                shortest_edge: None,
                height: Some(n),
                width: Some(n),
            },
            Size::Sides(s) => s,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    #[serde(default)]
    do_center_crop: bool,
    size: Option<Size>,
    crop_size: Option<Size>,
}

/// Mean and std per RGB channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Statistics {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Reads `dir/preprocessor_config.json` when there is one, refusing a
/// processor whose resize or crop is not `spec`'s, and returns its
/// statistics (`default` without the file or the fields).
pub fn statistics(
    dir: &Path,
    spec: &TaskSpec,
    default: Statistics,
) -> Result<Statistics, ModelError> {
    let path = dir.join("preprocessor_config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(default),
        Err(source) => return Err(ModelError::Read { path, source }),
    };
    let raw: Raw = serde_json::from_str(&text).map_err(|source| ModelError::Config {
        path: path.clone(),
        source,
    })?;
    let sides = |size: &Option<Size>, short| {
        size.as_ref()
            .map_or_else(Sides::default, |s| s.sides(short))
    };
    let (fit, size) = if raw.do_center_crop {
        let crop = sides(&raw.crop_size, false);
        (
            sides(&raw.size, true)
                .shortest_edge
                .map(|short| Fit::CenterCrop { short }),
            crop.width.zip(crop.height),
        )
    } else {
        let resize = sides(&raw.size, false);
        (Some(Fit::Stretch), resize.width.zip(resize.height))
    };
    let wanted = (Some(spec.fit), Some((spec.width, spec.height)));
    if (fit, size) != wanted {
        return Err(ModelError::Mismatch(format!(
            "{} resizes to {size:?} by {fit:?}, but task {} is fed {}x{} by {:?}",
            path.display(),
            spec.name,
            spec.width,
            spec.height,
            spec.fit
        )));
    }
    Ok(Statistics {
        mean: raw.image_mean.unwrap_or(default.mean),
        std: raw.image_std.unwrap_or(default.std),
    })
}
