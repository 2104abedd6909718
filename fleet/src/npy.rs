//! The NumPy `.npy` header of a C-ordered little-endian float32 matrix, the
//! one shape embeddings are stored in. By hand because the collector
//! streams rows into a multipart upload and heads stream them back out,
//! and both need only this shape: anything else is refused by name.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Header bytes for a `[rows, cols]` `<f4` array; the data follows as-is.
pub fn f32_matrix_header(rows: u64, cols: u64) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + length (2) + dict + '\n', padded to 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let padding = unpadded.next_multiple_of(64) - unpadded;
    let len = (dict.len() + padding + 1) as u16;
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

/// Reads the header of a `[rows, cols]` `<f4` C-ordered array (format
/// version 1, 2 or 3), leaving `reader` at the first value; returns
/// `(rows, cols)`.
pub async fn read_f32_matrix_header(
    reader: &mut (impl AsyncRead + Unpin),
) -> anyhow::Result<(u64, u64)> {
    let mut preamble = [0u8; 8];
    reader.read_exact(&mut preamble).await?;
    anyhow::ensure!(&preamble[..6] == b"\x93NUMPY", "not a .npy file");
    let len = match preamble[6] {
        1 => usize::from(reader.read_u16_le().await?),
        2 | 3 => reader.read_u32_le().await? as usize,
        v => anyhow::bail!(".npy format version {v} is not supported"),
    };
    anyhow::ensure!(len <= 1 << 16, ".npy header of {len} bytes is implausible");
    let mut dict = vec![0u8; len];
    reader.read_exact(&mut dict).await?;
    parse_dict(&String::from_utf8_lossy(&dict))
}

fn parse_dict(dict: &str) -> anyhow::Result<(u64, u64)> {
    let compact: String = dict.chars().filter(|c| !c.is_whitespace()).collect();
    anyhow::ensure!(
        compact.contains("'descr':'<f4'"),
        "only little-endian float32 arrays are supported, the header says {dict:?}"
    );
    anyhow::ensure!(
        compact.contains("'fortran_order':False"),
        "only C-ordered arrays are supported, the header says {dict:?}"
    );
    let shape = compact
        .split_once("'shape':(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(shape, _)| shape)
        .ok_or_else(|| anyhow::anyhow!("no shape in .npy header {dict:?}"))?;
    let dims: Vec<u64> = shape
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("unreadable shape in .npy header {dict:?}"))?;
    match dims[..] {
        [rows, cols] => Ok((rows, cols)),
        _ => anyhow::bail!("a 2-D matrix was expected, the header says {dict:?}"),
    }
}

/// Reads `rows` rows of `cols` values into `out` (cleared first).
pub async fn read_f32_rows(
    reader: &mut (impl AsyncRead + Unpin),
    rows: usize,
    cols: usize,
    out: &mut Vec<f32>,
) -> anyhow::Result<()> {
    let mut bytes = vec![0u8; rows * cols * 4];
    reader.read_exact(&mut bytes).await?;
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_matrices_read_back() {
        let mut bytes = f32_matrix_header(2, 3);
        for v in [1.0f32, 2.0, 3.0, -4.0, 5.5, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut reader = &bytes[..];
        assert_eq!(
            read_f32_matrix_header(&mut reader).await.expect("header"),
            (2, 3)
        );
        let mut rows = Vec::new();
        read_f32_rows(&mut reader, 2, 3, &mut rows)
            .await
            .expect("rows");
        assert_eq!(rows, [1.0, 2.0, 3.0, -4.0, 5.5, 6.0]);
    }

    #[test]
    fn other_arrays_are_refused_by_name() {
        let err = |d: &str| parse_dict(d).expect_err("refused").to_string();
        assert!(
            err("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }").contains("float32")
        );
        assert!(
            err("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }").contains("C-ordered")
        );
        assert!(err("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }").contains("2-D"));
        assert_eq!(
            parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1280), }")
                .expect("parses"),
            (0, 1280)
        );
    }

    #[test]
    fn header_is_aligned_and_names_the_shape() {
        let h = f32_matrix_header(1234, 1280);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let text = std::str::from_utf8(&h[10..]).expect("ascii");
        assert!(text.contains("'shape': (1234, 1280)"));
        assert!(text.ends_with('\n'));
    }
}
