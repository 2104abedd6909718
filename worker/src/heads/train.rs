//! Training a head on stored embeddings: standardised inputs, AdamW,
//! mini-batches in a seeded order, early stopping on a held-out split, and
//! the best epoch's weights kept. Everything random comes from `seed`, so
//! the same inputs give the same head, byte for byte.

use anyhow::{Context, ensure};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::{
    NewHead,
    mlp::Mlp,
    spec::{Encoder, FORMAT, HeadSpec, Normalisation, Origin, Target, Training, Validation},
};

/// Labelled embeddings: row `i` is `x[i*dim..(i+1)*dim]`, from video
/// `video[i]`.
pub struct Dataset {
    pub x: Vec<f32>,
    pub dim: usize,
    pub targets: Targets,
    pub video: Vec<usize>,
    pub videos: usize,
}

pub enum Targets {
    Classes { ids: Vec<u32>, names: Vec<String> },
    Numbers { values: Vec<f32>, unit: String },
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.video.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Loss {
    CrossEntropy,
    Mse,
    Huber,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Whole videos are held out: the honest test of footage not seen.
    Video,
    /// Frames are held out at random, for labels on a single video.
    Frame,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub hidden: usize,
    pub loss: Loss,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch: usize,
    pub max_epochs: usize,
    pub patience: usize,
    pub validation_fraction: f64,
    pub split: Split,
    pub seed: u64,
}

/// One epoch's figures, for progress.
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub best: bool,
}

/// The name a user passes on the command line.
fn value_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// Splits row indices into (train, validation).
fn split(
    data: &Dataset,
    opts: &Options,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let held_out =
        |n: usize| ((n as f64 * opts.validation_fraction).round() as usize).clamp(1, n - 1);
    match opts.split {
        Split::Video => {
            ensure!(
                data.videos >= 2,
                "labels cover {} video; holding out whole videos needs at least 2 (or pass --split frame)",
                data.videos
            );
            let mut videos: Vec<usize> = (0..data.videos).collect();
            videos.shuffle(rng);
            let mut is_validation = vec![false; data.videos];
            for &v in &videos[..held_out(data.videos)] {
                is_validation[v] = true;
            }
            Ok((0..data.rows()).partition(|&r| !is_validation[data.video[r]]))
        }
        Split::Frame => {
            ensure!(data.rows() >= 2, "at least 2 labelled frames are needed");
            let mut rows: Vec<usize> = (0..data.rows()).collect();
            rows.shuffle(rng);
            let validation = rows.split_off(rows.len() - held_out(rows.len()));
            Ok((rows, validation))
        }
    }
}

/// Per-dimension mean and standard deviation over `rows`; a constant
/// dimension gets a std of 1, so it passes through as zero.
fn normalisation(data: &Dataset, rows: &[usize]) -> Normalisation {
    let (dim, n) = (data.dim, rows.len() as f64);
    let mut mean = vec![0f64; dim];
    let mut var = vec![0f64; dim];
    for &r in rows {
        for (m, &v) in mean.iter_mut().zip(&data.x[r * dim..(r + 1) * dim]) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    for &r in rows {
        for ((s, m), &v) in var
            .iter_mut()
            .zip(&mean)
            .zip(&data.x[r * dim..(r + 1) * dim])
        {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    Normalisation {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std: var
            .iter()
            .map(|&s| (s / n).sqrt())
            .map(|s| if s > 1e-6 { s as f32 } else { 1.0 })
            .collect(),
        unit_length: false,
    }
}

/// The rows' inputs and targets as tensors; numbers standardised by
/// (mean, std).
fn tensors(
    data: &Dataset,
    rows: &[usize],
    scale: (f32, f32),
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dim = data.dim;
    let mut x = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        x.extend_from_slice(&data.x[r * dim..(r + 1) * dim]);
    }
    let x = Tensor::from_vec(x, (rows.len(), dim), device)?;
    let y = match &data.targets {
        Targets::Classes { ids, .. } => {
            Tensor::from_vec(rows.iter().map(|&r| ids[r]).collect(), rows.len(), device)?
        }
        Targets::Numbers { values, .. } => Tensor::from_vec(
            rows.iter()
                .map(|&r| (values[r] - scale.0) / scale.1)
                .collect(),
            (rows.len(), 1),
            device,
        )?,
    };
    Ok((x, y))
}

fn loss(kind: Loss, out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    match kind {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, y),
        Loss::Mse => candle_nn::loss::mse(out, y),
        // Quadratic within one (standardised) unit of the target, linear
        // beyond: outliers in the labels pull less.
        Loss::Huber => {
            let err = (out - y)?.abs()?;
            let quadratic = (err.sqr()? * 0.5)?;
            let linear = (&err - 0.5)?;
            err.le(1.0)?.where_cond(&quadratic, &linear)?.mean_all()
        }
    }
}

pub fn train(
    data: &Dataset,
    opts: &Options,
    name: &str,
    encoder: Encoder,
    mut progress: impl FnMut(&Epoch),
) -> anyhow::Result<NewHead> {
    let device = Device::Cpu;
    let classes = match &data.targets {
        Targets::Classes { names, .. } => {
            ensure!(
                names.len() >= 2,
                "a class head needs at least 2 classes, the labels name {}",
                names.len()
            );
            ensure!(
                opts.loss == Loss::CrossEntropy,
                "class labels train with --loss cross-entropy"
            );
            Some(names.clone())
        }
        Targets::Numbers { .. } => {
            ensure!(
                opts.loss != Loss::CrossEntropy,
                "numeric labels train with --loss mse or huber"
            );
            None
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (train_rows, validation_rows) = split(data, opts, &mut rng)?;
    let input = normalisation(data, &train_rows);
    let scale = match &data.targets {
        Targets::Numbers { values, .. } => {
            let n = train_rows.len() as f64;
            let mean = train_rows
                .iter()
                .map(|&r| f64::from(values[r]))
                .sum::<f64>()
                / n;
            let var = train_rows
                .iter()
                .map(|&r| (f64::from(values[r]) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean as f32, (var.sqrt() as f32).max(1e-6))
        }
        Targets::Classes { .. } => (0.0, 1.0),
    };
    let outputs = classes.as_ref().map_or(1, Vec::len);

    let varmap = VarMap::new();
    Mlp::init(&varmap, data.dim, opts.hidden, outputs, opts.seed, &device)?;
    let mlp = Mlp::new(
        &VarBuilder::from_varmap(&varmap, DType::F32, &device),
        data.dim,
        opts.hidden,
        outputs,
        &input,
    )?;
    let mut optimiser = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let (val_x, val_y) = tensors(data, &validation_rows, scale, &device)?;

    let mut order = train_rows.clone();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut epochs = 0;
    for epoch in 1..=opts.max_epochs {
        epochs = epoch;
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for batch in order.chunks(opts.batch) {
            let (x, y) = tensors(data, batch, scale, &device)?;
            let l = loss(opts.loss, &mlp.forward(&x)?, &y)?;
            optimiser.backward_step(&l)?;
            total += f64::from(l.to_scalar::<f32>()?) * batch.len() as f64;
        }
        let validation_loss =
            f64::from(loss(opts.loss, &mlp.forward(&val_x)?, &val_y)?.to_scalar::<f32>()?);
        let improved = best.as_ref().is_none_or(|(b, _, _)| validation_loss < *b);
        if improved {
            let weights = varmap
                .all_vars()
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?;
            best = Some((validation_loss, epoch, weights));
        }
        progress(&Epoch {
            epoch,
            train_loss: total / train_rows.len() as f64,
            validation_loss,
            best: improved,
        });
        if best
            .as_ref()
            .is_some_and(|(_, at, _)| epoch - at >= opts.patience)
        {
            break;
        }
    }
    let (validation_loss, best_epoch, weights) = best.context("no epoch ran (--epochs 0)")?;
    for (var, kept) in varmap.all_vars().iter().zip(&weights) {
        var.set(kept)?;
    }

    let out = mlp.forward(&val_x)?;
    let validation = match &data.targets {
        Targets::Classes { ids, .. } => {
            let predicted = out.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let mut confusion = vec![vec![0u64; outputs]; outputs];
            for (&r, &p) in validation_rows.iter().zip(&predicted) {
                confusion[ids[r] as usize][p as usize] += 1;
            }
            let right: u64 = (0..outputs).map(|c| confusion[c][c]).sum();
            Validation {
                loss: validation_loss,
                accuracy: Some(right as f64 / validation_rows.len() as f64),
                confusion: Some(confusion),
                ..Default::default()
            }
        }
        Targets::Numbers { values, .. } => {
            let predicted = out.flatten_all()?.to_vec1::<f32>()?;
            let errors: Vec<f64> = validation_rows
                .iter()
                .zip(&predicted)
                .map(|(&r, &p)| f64::from(p * scale.1 + scale.0) - f64::from(values[r]))
                .collect();
            let n = errors.len() as f64;
            Validation {
                loss: validation_loss,
                mae: Some(errors.iter().map(|e| e.abs()).sum::<f64>() / n),
                rmse: Some((errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt()),
                ..Default::default()
            }
        }
    };
    let videos_in = |rows: &[usize]| {
        let mut seen: Vec<usize> = rows.iter().map(|&r| data.video[r]).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    let target = match &data.targets {
        Targets::Classes { names, .. } => Target::Classes {
            classes: names.clone(),
        },
        Targets::Numbers { unit, .. } => Target::Number {
            unit: unit.clone(),
            mean: scale.0,
            std: scale.1,
        },
    };
    let spec = HeadSpec {
        format: FORMAT.to_owned(),
        name: name.to_owned(),
        encoder,
        target,
        hidden: opts.hidden,
        input,
        origin: Origin::Trained {
            training: Training {
                loss: value_name(opts.loss),
                seed: opts.seed,
                split: value_name(opts.split),
                learning_rate: opts.learning_rate,
                weight_decay: opts.weight_decay,
                epochs,
                best_epoch,
                train_rows: train_rows.len(),
                validation_rows: validation_rows.len(),
                train_videos: videos_in(&train_rows),
                validation_videos: videos_in(&validation_rows),
            },
            validation,
        },
    };
    Ok(NewHead { varmap, spec })
}
