//! Saving and loading weights as safetensors, named like PyTorch's `nn.Sequential` state
//! dict (`0.weight` of shape `(16, 3, 3, 3)`, `0.bias` of shape `(16,)`, …), with text
//! metadata (architecture, classes, input scaling).

use crate::{Float, Sequential};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// A checkpoint that could not be written or read, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CheckpointError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What went wrong.
    pub message: String,
}

fn error(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// PyTorch's shape for a parameter: biases are 1-D `(n_o,)`, weights keep their shape.
fn torch_shape(name: &str, shape: &[usize]) -> Vec<usize> {
    if name == "bias" {
        vec![shape.iter().product()]
    } else {
        shape.to_vec()
    }
}

/// Every parameter as `(name, shape, little-endian bytes)`, named `<layer index>.<weight|bias>`.
pub fn tensors<F: Float>(model: &mut Sequential<F>) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, layer) in model.layers_mut().iter_mut().enumerate() {
        for p in layer.params_mut() {
            let bytes: Vec<u8> = if F::NAME == "f32" {
                p.value
                    .iter()
                    .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                    .collect()
            } else {
                p.value
                    .iter()
                    .flat_map(|v| v.as_f64().to_le_bytes())
                    .collect()
            };
            out.push((
                format!("{i}.{}", p.name),
                torch_shape(p.name, p.value.shape()),
                bytes,
            ));
        }
    }
    out
}

/// Serialises the model's weights with `metadata`.
pub fn to_bytes<F: Float>(model: &mut Sequential<F>, metadata: HashMap<String, String>) -> Vec<u8> {
    let dtype = if F::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let tensors = tensors(model);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(dtype, s.clone(), b).expect("bytes match the shape"),
            )
        })
        .collect();
    safetensors::serialize(views, Some(metadata)).expect("valid tensors")
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never
/// leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Saves the model's weights and `metadata` to `path` (atomically).
pub fn save<F: Float>(
    path: &Path,
    model: &mut Sequential<F>,
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    write_atomic(path, &to_bytes(model, metadata)).map_err(|e| error(path, e.to_string()))
}

/// The text metadata of a safetensors file.
pub fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>, CheckpointError> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| error(path, format!("not a safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Loads weights into a model of the same architecture, checking every name and shape.
pub fn load_weights<F: Float>(
    path: &Path,
    bytes: &[u8],
    model: &mut Sequential<F>,
) -> Result<(), CheckpointError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| error(path, format!("not a safetensors file: {e}")))?;
    let mut expected = 0;
    for (i, layer) in model.layers_mut().iter_mut().enumerate() {
        for mut p in layer.params_mut() {
            expected += 1;
            let name = format!("{i}.{}", p.name);
            let t = st
                .tensor(&name)
                .map_err(|_| error(path, format!("tensor {name} is missing")))?;
            let want = torch_shape(p.name, p.value.shape());
            if t.shape() != want.as_slice() {
                return Err(error(
                    path,
                    format!("tensor {name} has shape {:?}, expected {want:?}", t.shape()),
                ));
            }
            let values: Vec<f64> = match t.dtype() {
                Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                    .collect(),
                Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
                other => {
                    return Err(error(
                        path,
                        format!("tensor {name} has dtype {other:?}, expected F32 or F64"),
                    ))
                }
            };
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(error(path, format!("tensor {name} holds {bad}")));
            }
            for (dst, v) in p.value.iter_mut().zip(values) {
                *dst = F::from_f64(v);
            }
        }
    }
    if st.len() != expected {
        return Err(error(
            path,
            format!(
                "{} tensors, expected {expected} for this architecture",
                st.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;
    use rand::SeedableRng;

    #[test]
    fn round_trip_restores_every_weight_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut a = models::lab::<f32, _>(3, 32, 32, 3, &mut rng);
        let mut b = models::lab::<f32, _>(3, 32, 32, 3, &mut rng);
        let meta = HashMap::from([("arch".to_string(), models::LAB_ARCH.to_string())]);
        let bytes = to_bytes(&mut a, meta);
        load_weights(Path::new("m"), &bytes, &mut b).unwrap();
        assert_eq!(tensors(&mut a), tensors(&mut b));
        assert_eq!(
            metadata(Path::new("m"), &bytes).unwrap()["arch"],
            models::LAB_ARCH
        );
        let names: Vec<String> = tensors(&mut a)
            .into_iter()
            .map(|(n, s, _)| format!("{n}{s:?}"))
            .collect();
        assert_eq!(
            names,
            [
                "0.weight[16, 3, 3, 3]",
                "0.bias[16]",
                "3.weight[32, 16, 3, 3]",
                "3.bias[32]",
                "7.weight[3, 2048]",
                "7.bias[3]"
            ]
        );
    }

    #[test]
    fn wrong_architecture_and_garbage_are_explained() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut a = models::lab::<f32, _>(3, 32, 32, 3, &mut rng);
        let mut other = models::lab::<f32, _>(3, 32, 32, 5, &mut rng);
        let bytes = to_bytes(&mut a, HashMap::new());
        let err = load_weights(Path::new("m.safetensors"), &bytes, &mut other)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "m.safetensors: tensor 7.weight has shape [3, 2048], expected [5, 2048]"
        );
        let err = load_weights(Path::new("x"), b"garbage", &mut a)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x: not a safetensors file"), "{err}");
    }
}
