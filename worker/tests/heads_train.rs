//! Heads trained on synthetic embeddings whose answer is known: they learn
//! it, the same seed gives the same head byte for byte, and a saved head
//! loads and answers as it did in training.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schema::HeadValues;
use worker::heads::{
    Head, NewHead,
    spec::Encoder,
    train::{self, Dataset, Loss, Options, Split, Targets},
};

const DIM: usize = 16;

fn encoder() -> Encoder {
    Encoder {
        task: "embed.effnet-lite0".into(),
        model: Some("test".into()),
        dim: DIM,
    }
}

fn options(loss: Loss) -> Options {
    Options {
        hidden: 0,
        loss,
        learning_rate: 1e-2,
        weight_decay: 1e-4,
        batch: 32,
        max_epochs: 100,
        patience: 10,
        validation_fraction: 0.25,
        split: Split::Video,
        seed: 7,
    }
}

/// Three classes, each a noisy cluster around its own centre; 8 videos of
/// 40 frames, each video mixing all classes.
fn clusters() -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let centres: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..DIM).map(|_| rng.random_range(-2.0..2.0)).collect())
        .collect();
    let (mut x, mut ids, mut video) = (Vec::new(), Vec::new(), Vec::new());
    for v in 0..8 {
        for i in 0..40 {
            let class = (i + v) % 3;
            x.extend(
                centres[class]
                    .iter()
                    .map(|c| c + rng.random_range(-1.0f32..1.0)),
            );
            ids.push(class as u32);
            video.push(v);
        }
    }
    Dataset {
        x,
        dim: DIM,
        targets: Targets::Classes {
            ids,
            names: vec!["car".into(), "person".into(), "tree".into()],
        },
        video,
        videos: 8,
    }
}

fn weights(trained: &NewHead) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = trained
        .varmap
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .expect("f32"),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn a_class_head_learns_held_out_videos_and_is_deterministic() {
    let data = clusters();
    let a = train::train(
        &data,
        &options(Loss::CrossEntropy),
        "objects",
        encoder(),
        |_| {},
    )
    .expect("trains");
    let accuracy = a
        .spec
        .validation()
        .expect("a trained head")
        .accuracy
        .expect("accuracy");
    assert!(
        accuracy > 0.9,
        "validation accuracy {accuracy} (chance is 0.33)"
    );
    assert_eq!(
        a.spec.training().expect("a trained head").validation_videos,
        2
    );
    assert_eq!(a.spec.training().expect("a trained head").train_videos, 6);
    let confusion = a
        .spec
        .validation()
        .expect("a trained head")
        .confusion
        .clone()
        .expect("confusion");
    let counted: u64 = confusion.iter().flatten().sum();
    assert_eq!(
        counted as usize,
        a.spec.training().expect("a trained head").validation_rows
    );

    let b = train::train(
        &data,
        &options(Loss::CrossEntropy),
        "objects",
        encoder(),
        |_| {},
    )
    .expect("trains");
    assert_eq!(weights(&a), weights(&b), "same seed, same head");
    assert_eq!(
        a.spec.training().expect("a trained head").best_epoch,
        b.spec.training().expect("a trained head").best_epoch
    );
    let mut other = options(Loss::CrossEntropy);
    other.seed = 8;
    let c = train::train(&data, &other, "objects", encoder(), |_| {}).expect("trains");
    assert_ne!(weights(&a), weights(&c), "the seed matters");
}

#[test]
fn a_saved_head_loads_and_answers_as_trained() {
    let data = clusters();
    let mut opts = options(Loss::CrossEntropy);
    opts.hidden = 8;
    let trained = train::train(&data, &opts, "objects", encoder(), |_| {}).expect("trains");
    let dir = std::env::temp_dir().join(format!("ff-head-{}", std::process::id()));
    trained.save(&dir).expect("saves");
    let head = Head::load(&dir).expect("loads");
    // A hand-edited description that would make every answer NaN is refused.
    let mut broken = trained.spec.clone();
    broken.input.std[3] = 0.0;
    std::fs::write(
        dir.join("head.json"),
        serde_json::to_vec(&broken).expect("json"),
    )
    .expect("write");
    let refused = Head::load(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("positive std"), "{refused}");
    std::fs::remove_dir_all(&dir).ok();
    head.check_encoder("embed.effnet-lite0", DIM)
        .expect("fits its encoder");
    assert!(head.check_encoder("embed.dinov2-small", DIM).is_err());
    assert!(head.check_encoder("embed.effnet-lite0", DIM + 1).is_err());

    let Targets::Classes { ids, .. } = &data.targets else {
        unreachable!()
    };
    let HeadValues::Classes(labels) = head.apply(&data.x, data.rows()).expect("applies") else {
        panic!("a class head answers with classes");
    };
    let right = labels
        .iter()
        .zip(ids)
        .filter(|(l, id)| l.class == **id)
        .count();
    assert!(
        right as f64 / ids.len() as f64 > 0.9,
        "{right} of {} right",
        ids.len()
    );
    for l in &labels {
        assert!(
            l.score > 1.0 / 3.0 && l.score <= 1.0,
            "top-1 probability {}",
            l.score
        );
        assert_eq!(l.name, ["car", "person", "tree"][l.class as usize]);
    }
}

#[test]
fn a_number_head_recovers_a_linear_target_in_its_unit() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (mut x, mut values, mut video) = (Vec::new(), Vec::new(), Vec::new());
    for v in 0..5 {
        for _ in 0..100 {
            let row: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
            // People in frame: 10 + 3·x0 − 2·x1, a little noise.
            values.push(10.0 + 3.0 * row[0] - 2.0 * row[1] + rng.random_range(-0.05..0.05));
            x.extend(row);
            video.push(v);
        }
    }
    let data = Dataset {
        x,
        dim: DIM,
        targets: Targets::Numbers {
            values,
            unit: "people".into(),
        },
        video,
        videos: 5,
    };
    let mut opts = options(Loss::Mse);
    opts.max_epochs = 300;
    opts.patience = 20;
    let trained = train::train(&data, &opts, "people", encoder(), |_| {}).expect("trains");
    let mae = trained
        .spec
        .validation()
        .expect("a trained head")
        .mae
        .expect("mae");
    // The target's spread is about 2.1 people; a head that learned nothing
    // is off by about 1.7 on average.
    assert!(mae < 0.2, "validation MAE {mae} people");
    let huber =
        train::train(&data, &options(Loss::Huber), "people", encoder(), |_| {}).expect("trains");
    assert!(
        huber
            .spec
            .validation()
            .expect("a trained head")
            .mae
            .expect("mae")
            < 0.3
    );
    assert!(
        train::train(
            &data,
            &options(Loss::CrossEntropy),
            "people",
            encoder(),
            |_| {}
        )
        .is_err()
    );
}
