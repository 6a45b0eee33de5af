//! Networks from a short text description (`--arch`) and the lab's network.
//!
//! Grammar: comma-separated layers,
//! `conv<N>` (N filters 3×3) or `conv<N>x<H>` (H×H), `relu`, `pool` (2×2) or `pool<K>`,
//! `flatten`, `full<N>` (a hidden fully connected layer) and, last, `full` (one output per
//! class). A softmax is appended; the loss is cross-entropy. The input shape comes from the
//! data set, so one description fits CIFAR (3×32×32) and Fashion-MNIST (1×28×28) alike.

use crate::layers::{
    ConvLayer, CrossEntropyLayer, FlattenLayer, FullLayer, MaxPoolLayer, ReluLayer, SoftMaxLayer,
};
use crate::{Float, Layer, Sequential};
use rand::Rng;
use std::fmt;

/// The lab's network: conv 16, relu, pool, conv 32, relu, pool, flatten, full.
pub const LAB_ARCH: &str = "conv16,relu,pool,conv32,relu,pool,flatten,full";

/// One layer of an architecture description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// `conv<out>x<h>`: a "same" convolution.
    Conv {
        /// Output channels.
        out: usize,
        /// Filter size.
        h: usize,
    },
    /// `relu`.
    Relu,
    /// `pool<k>`: k×k max pooling.
    Pool {
        /// Window size.
        k: usize,
    },
    /// `flatten`.
    Flatten,
    /// `full<out>`, or `full` for the class outputs.
    Full {
        /// Output width; `None` means the number of classes.
        out: Option<usize>,
    },
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayerSpec::Conv { out, h: 3 } => write!(f, "conv{out}"),
            LayerSpec::Conv { out, h } => write!(f, "conv{out}x{h}"),
            LayerSpec::Relu => f.write_str("relu"),
            LayerSpec::Pool { k: 2 } => f.write_str("pool"),
            LayerSpec::Pool { k } => write!(f, "pool{k}"),
            LayerSpec::Flatten => f.write_str("flatten"),
            LayerSpec::Full { out: Some(n) } => write!(f, "full{n}"),
            LayerSpec::Full { out: None } => f.write_str("full"),
        }
    }
}

/// Why an architecture description was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--arch {arch:?}: {message}")]
pub struct ArchError {
    /// The description.
    pub arch: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed architecture description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    /// The layers, without the final softmax.
    pub layers: Vec<LayerSpec>,
}

const GRAMMAR: &str = "expected convN, convNxH, relu, pool, poolK, flatten, fullN or a final full";

impl Arch {
    /// Parses `conv16,relu,pool,…,full`.
    pub fn parse(text: &str) -> Result<Self, ArchError> {
        let err = |message: String| ArchError {
            arch: text.to_string(),
            message,
        };
        let number = |s: &str, what: &str, pos: usize| -> Result<usize, ArchError> {
            match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(err(format!(
                    "layer {pos} ({what}{s}): {s:?} is not a positive whole number"
                ))),
            }
        };
        let mut layers = Vec::new();
        for (pos, token) in text.split(',').map(str::trim).enumerate() {
            let spec = if let Some(rest) = token.strip_prefix("conv") {
                match rest.split_once('x') {
                    Some((n, h)) => LayerSpec::Conv {
                        out: number(n, "conv", pos)?,
                        h: number(h, &format!("conv{n}x"), pos)?,
                    },
                    None => LayerSpec::Conv {
                        out: number(rest, "conv", pos)?,
                        h: 3,
                    },
                }
            } else if token == "relu" {
                LayerSpec::Relu
            } else if token == "flatten" {
                LayerSpec::Flatten
            } else if let Some(rest) = token.strip_prefix("pool") {
                LayerSpec::Pool {
                    k: if rest.is_empty() {
                        2
                    } else {
                        number(rest, "pool", pos)?
                    },
                }
            } else if let Some(rest) = token.strip_prefix("full") {
                LayerSpec::Full {
                    out: if rest.is_empty() {
                        None
                    } else {
                        Some(number(rest, "full", pos)?)
                    },
                }
            } else {
                return Err(err(format!(
                    "layer {pos}: unknown layer {token:?}; {GRAMMAR}"
                )));
            };
            layers.push(spec);
        }
        match layers
            .iter()
            .position(|l| *l == LayerSpec::Full { out: None })
        {
            Some(p) if p == layers.len() - 1 => Ok(Self { layers }),
            Some(p) => Err(err(format!(
                "layer {p}: the class layer `full` must come last"
            ))),
            None => Err(err(
                "the last layer must be `full` (one output per class)".into()
            )),
        }
    }

    /// Builds the network for `(channels, rows, cols)` inputs and `classes` outputs,
    /// checking every layer's input shape.
    pub fn build<F: Float, R: Rng + ?Sized>(
        &self,
        input: (usize, usize, usize),
        classes: usize,
        rng: &mut R,
    ) -> Result<Sequential<F>, ArchError> {
        let err = |message: String| ArchError {
            arch: self.to_string(),
            message,
        };
        if classes == 0 {
            return Err(err("the data have no classes".into()));
        }
        let mut shape = vec![1, input.0, input.1, input.2];
        let mut layers: Vec<Box<dyn Layer<F>>> = Vec::new();
        for (pos, spec) in self.layers.iter().enumerate() {
            let layer: Box<dyn Layer<F>> = match *spec {
                LayerSpec::Conv { out, h } => {
                    let n_i = if shape.len() == 4 {
                        shape[1]
                    } else {
                        return Err(err(format!("layer {pos} ({spec}) needs images, but gets flat vectors of shape {:?}", &shape[1..])));
                    };
                    Box::new(ConvLayer::new(n_i, out, h, rng))
                }
                LayerSpec::Relu => Box::new(ReluLayer::new()),
                LayerSpec::Pool { k } => Box::new(MaxPoolLayer::new(k)),
                LayerSpec::Flatten => Box::new(FlattenLayer::new()),
                LayerSpec::Full { out } => {
                    if shape.len() != 2 {
                        return Err(err(format!("layer {pos} ({spec}) needs flat vectors: put `flatten` before it (its input has shape {:?})", &shape[1..])));
                    }
                    Box::new(FullLayer::new(shape[1], out.unwrap_or(classes), rng))
                }
            };
            shape = layer
                .output_shape(&shape)
                .map_err(|e| err(format!("layer {pos} ({spec}) does not fit: {e}")))?;
            layers.push(layer);
        }
        layers.push(Box::new(SoftMaxLayer::new()));
        Ok(Sequential::new(layers, CrossEntropyLayer::new()))
    }

    /// The equivalent PyTorch `nn.Sequential`, whose state-dict names match our checkpoints.
    pub fn pytorch(&self, input: (usize, usize, usize), classes: usize) -> String {
        let mut c = input.0;
        let (mut rows, mut cols) = (input.1, input.2);
        let mut flat = 0;
        let mut parts = Vec::new();
        for spec in &self.layers {
            parts.push(match *spec {
                LayerSpec::Conv { out, h } => {
                    let pad = if h % 2 == 1 {
                        (h / 2).to_string()
                    } else {
                        "'same'".to_string()
                    };
                    let s = format!("nn.Conv2d({c}, {out}, {h}, padding={pad})");
                    c = out;
                    s
                }
                LayerSpec::Relu => "nn.ReLU()".into(),
                LayerSpec::Pool { k } => {
                    rows /= k;
                    cols /= k;
                    format!("nn.MaxPool2d({k})")
                }
                LayerSpec::Flatten => {
                    flat = c * rows * cols;
                    "nn.Flatten()".into()
                }
                LayerSpec::Full { out } => {
                    let o = out.unwrap_or(classes);
                    let s = format!("nn.Linear({flat}, {o})");
                    flat = o;
                    s
                }
            });
        }
        format!("nn.Sequential({})", parts.join(", "))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.layers.iter().map(|l| l.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// The lab's network for `(channels, rows, cols)` images and `classes` outputs:
/// conv channels→16 3×3, ReLU, max-pool 2, conv 16→32 3×3, ReLU, max-pool 2, flatten,
/// full `32·⌊rows/4⌋·⌊cols/4⌋ → classes`, softmax, cross-entropy.
/// For CIFAR's 3×32×32 that is the lab's full 2048→k.
///
/// # Panics
/// If `rows` or `cols` is below 4 or any size is zero.
pub fn lab<F: Float, R: Rng + ?Sized>(
    channels: usize,
    rows: usize,
    cols: usize,
    classes: usize,
    rng: &mut R,
) -> Sequential<F> {
    Arch::parse(LAB_ARCH)
        .expect("the lab architecture parses")
        .build((channels, rows, cols), classes, rng)
        .unwrap_or_else(|e| panic!("models::lab: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(0)
    }

    #[test]
    fn lab_network_on_cifar_shapes() {
        let model = lab::<f32, _>(3, 32, 32, 3, &mut rng());
        let shapes = model.shapes(&[128, 3, 32, 32]).unwrap();
        assert_eq!(shapes[6], vec![128, 2048]);
        assert_eq!(shapes.last().unwrap(), &vec![128, 3]);
        assert_eq!(
            model.num_params(),
            (16 * 27 + 16) + (32 * 144 + 32) + (3 * 2048 + 3)
        );
    }

    #[test]
    fn same_description_fits_fashion_mnist() {
        let model: Sequential<f32> = Arch::parse(LAB_ARCH)
            .unwrap()
            .build((1, 28, 28), 10, &mut rng())
            .unwrap();
        assert_eq!(model.shapes(&[2, 1, 28, 28]).unwrap()[6], vec![2, 1568]);
        assert_eq!(Arch::parse(LAB_ARCH).unwrap().pytorch((1, 28, 28), 10), "nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1568, 10))");
    }

    #[test]
    fn parses_sizes_and_round_trips() {
        let a = Arch::parse("conv8x5, relu, pool3, flatten, full64, relu, full").unwrap();
        assert_eq!(a.layers[0], LayerSpec::Conv { out: 8, h: 5 });
        assert_eq!(a.layers[2], LayerSpec::Pool { k: 3 });
        assert_eq!(a.to_string(), "conv8x5,relu,pool3,flatten,full64,relu,full");
        let m: Sequential<f64> = a.build((3, 9, 9), 4, &mut rng()).unwrap();
        assert_eq!(
            m.shapes(&[1, 3, 9, 9]).unwrap().last().unwrap(),
            &vec![1, 4]
        );
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let msg = |s: &str| Arch::parse(s).unwrap_err().to_string();
        assert!(msg("conv16,tanh,flatten,full")
            .contains("layer 1: unknown layer \"tanh\"; expected convN"));
        assert!(msg("conv0,flatten,full").contains("\"0\" is not a positive whole number"));
        assert!(msg("conv16,flatten").contains("the last layer must be `full`"));
        assert!(msg("full,relu").contains("must come last"));
        let build = |s: &str| {
            Arch::parse(s)
                .unwrap()
                .build::<f32, _>((1, 28, 28), 10, &mut rng())
                .err()
                .unwrap()
                .to_string()
        };
        assert!(build("pool,pool,pool,pool,pool,flatten,full").contains("layer 4 (pool) does not fit: MaxPoolLayer(2×2): expected an input of shape (n_b, channels, rows ≥ 2, cols ≥ 2), got [1, 1, 1, 1]"));
        assert!(build("conv4,full").contains("put `flatten` before it"));
        assert!(build("flatten,conv4,flatten,full").contains("needs images"));
    }
}
