//! `worker caption`: BLIP on image files, one JSON line per image.

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context;
use image::imageops::FilterType;
use schema::Fit;

use crate::{
    cli::CaptionArgs,
    load,
    models::{Backend, Images, blip::Captioner},
};

/// Decodes an image file to RGB24 at `size`×`size`, fitted as `fit` says.
/// Catmull-Rom is the bicubic kernel (a = −0.5) of PIL, which BlipImageProcessor resizes with.
pub fn read_image(path: &Path, size: u32, fit: Fit) -> anyhow::Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("{} is not a readable image", path.display()))?
        .to_rgb8();
    // The processor's geometry (`Fit::scaled_size`): a stretch to the
    // input size, or the shorter side to `short` and then the centre cut
    // out. A picture already at the scaled size is not resampled, as in PIL.
    let (w, h) = img.dimensions();
    let (sw, sh) = fit.scaled_size(w, h, size, size);
    let img = if (w, h) == (sw, sh) {
        img
    } else {
        image::imageops::resize(&img, sw, sh, FilterType::CatmullRom)
    };
    let img = if (sw, sh) == (size, size) {
        img
    } else {
        image::imageops::crop_imm(&img, (sw - size) / 2, (sh - size) / 2, size, size).to_image()
    };
    Ok(img.into_raw())
}

#[derive(serde::Serialize)]
struct Line<'a> {
    image: &'a str,
    caption: &'a str,
    token_ids: &'a [u32],
}

pub fn run(args: &CaptionArgs) -> anyhow::Result<()> {
    let at = load::locate(&args.model, Backend::Blip.files())?;
    let captioner = Captioner::load(
        &at.name,
        &at.dir,
        &at.device,
        &args.caption.prompt,
        load::limits(&args.caption),
        args.caption.dtype.dtype(),
    )
    .with_context(|| format!("cannot load the model in {}", at.dir.display()))?;
    let size = captioner.image_size();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for paths in args.images.chunks(args.batch as usize) {
        let mut pixels = Vec::new();
        for path in paths {
            pixels.extend(read_image(path, size as u32, Fit::Stretch)?);
        }
        let captions = captioner.caption(Images {
            pixels: &pixels,
            count: paths.len(),
            width: size,
            height: size,
        })?;
        for (path, c) in paths.iter().zip(&captions) {
            let line = Line {
                image: &path.to_string_lossy(),
                caption: &c.caption,
                token_ids: &c.token_ids,
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        }
        out.flush()?;
    }
    Ok(())
}
