//! Convolutions over time: a causal depthwise convolution that continues from a state (HF
//! `causal_conv1d_fn` / `causal_conv1d_update`: `nn.Conv1d(groups=channels, padding=kernel - 1)`
//! cut to the input length, the cache holding the last inputs), and a plain `nn.Conv1d` over a
//! whole input (Whisper's audio stem).

use candle_core::{DType, Tensor};

use super::LoadContext;
use crate::error::Result;

/// `y[i] = sum_j w[j] * x[i + j - (kernel - 1)]` per channel, the inputs before the first token
/// taken from the state (zeros at the start of a sequence).
#[derive(Debug, Clone)]
pub struct CausalConv1d {
    /// `[kernel, channels]` (stored `[channels, 1, kernel]`).
    weight: Tensor,
    /// `[channels]`.
    bias: Option<Tensor>,
    kernel: usize,
}

impl CausalConv1d {
    /// Loads `{prefix}.weight` `[channels, 1, kernel]` (and `{prefix}.bias` `[channels]`) in
    /// `dtype`, the dtype its input must have.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (channels, kernel): (usize, usize),
        bias: bool,
        dtype: DType,
    ) -> Result<Self> {
        let weight = ctx
            .tensor_as(&format!("{prefix}.weight"), &[channels, 1, kernel], dtype)?
            .reshape((channels, kernel))?
            .t()?
            .contiguous()?;
        let bias = bias
            .then(|| ctx.tensor_as(&format!("{prefix}.bias"), &[channels], dtype))
            .transpose()?;
        Ok(Self {
            weight,
            bias,
            kernel,
        })
    }

    /// Only the channels in `ranges`, in that order (a tensor-parallel rank's channels).
    pub fn keep_channels(self, ranges: &[std::ops::Range<usize>]) -> Result<Self> {
        let cut = |t: &Tensor, dim: usize| -> Result<Tensor> {
            let parts = ranges
                .iter()
                .map(|r| t.narrow(dim, r.start, r.len()))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, dim)?.contiguous()?)
        };
        Ok(Self {
            weight: cut(&self.weight, 1)?, // [kernel, kept]
            bias: self.bias.as_ref().map(|b| cut(b, 0)).transpose()?,
            kernel: self.kernel,
        })
    }

    /// Inputs the state keeps: `kernel - 1`.
    pub fn state_len(&self) -> usize {
        self.kernel - 1
    }

    /// `x` `[b, t, c]` after the state `[b, kernel - 1, c]` (`None`: zeros) -> the output
    /// `[b, t, c]` and the new state, the last `kernel - 1` inputs.
    pub fn forward(&self, x: &Tensor, state: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, t, c) = x.dims3()?;
        let k1 = self.state_len();
        let prev = match state {
            Some(s) => s.clone(),
            None => Tensor::zeros((b, k1, c), x.dtype(), x.device())?,
        };
        let full = Tensor::cat(&[&prev, x], 1)?; // [b, k1 + t, c]
        let mut y = full.narrow(1, 0, t)?.broadcast_mul(&self.weight.get(0)?)?;
        for j in 1..self.kernel {
            y = (y + full.narrow(1, j, t)?.broadcast_mul(&self.weight.get(j)?)?)?;
        }
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let state = full.narrow(1, t, k1)?.contiguous()?; // [b, k1, c]
        Ok((y, state))
    }
}

/// `nn.Conv1d(in, out, kernel, stride, padding)` with a bias: `[b, in, t] -> [b, out, t']`,
/// `t' = (t + 2 padding - kernel) / stride + 1`.
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// `[out, in, kernel]`.
    weight: Tensor,
    /// `[1, out, 1]`.
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv1d {
    /// Loads `{prefix}.weight` `[out, in, kernel]` and `{prefix}.bias` `[out]`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (in_channels, out_channels, kernel): (usize, usize, usize),
        (stride, padding): (usize, usize),
    ) -> Result<Self> {
        let weight = ctx.tensor(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, kernel],
        )?;
        let bias = ctx
            .tensor(&format!("{prefix}.bias"), &[out_channels])?
            .reshape((1, out_channels, 1))?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// `[b, in, t] -> [b, out, t']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .contiguous()?
            .conv1d(&self.weight, self.padding, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One call over the whole input equals token-by-token calls carrying the state.
    #[test]
    fn continues_from_its_state() {
        let dev = Device::Cpu;
        let conv = CausalConv1d {
            weight: Tensor::new(&[[1f32, 10.], [2., 20.], [3., 30.]], &dev).unwrap(), // [3, 2]
            bias: None,
            kernel: 3,
        };
        let x = Tensor::new(&[[[1f32, 2.], [3., 4.], [5., 6.], [7., 8.]]], &dev).unwrap(); // [1, 4, 2]
        let (all, state) = conv.forward(&x, None).unwrap();
        // channel 0: y[i] = 1 x[i-2] + 2 x[i-1] + 3 x[i]
        let c0: Vec<f32> = all
            .narrow(2, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(c0, vec![3., 11., 22., 34.]);
        let mut s = None;
        let mut steps = Vec::new();
        for i in 0..4 {
            let (y, st) = conv
                .forward(&x.narrow(1, i, 1).unwrap(), s.as_ref())
                .unwrap();
            steps.push(y);
            s = Some(st);
        }
        let steps = Tensor::cat(&steps, 1).unwrap();
        assert_eq!(
            steps.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            all.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(
            s.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            state.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    /// Stride 2 with padding 1: `y[i] = sum_j w[j] x[2 i + j - 1] + b`, zeros outside the input.
    #[test]
    fn strided_padded_convolution() {
        let dev = Device::Cpu;
        let conv = Conv1d {
            weight: Tensor::new(&[[[1f32, 2., 3.]]], &dev).unwrap(), // [1, 1, 3]
            bias: Tensor::new(&[[[0.5f32]]], &dev).unwrap(),
            stride: 2,
            padding: 1,
        };
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &dev).unwrap(); // [1, 1, 4]
        let y: Vec<f32> = conv
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // i = 0: 0*1 + 1*2 + 2*3; i = 1: 2*1 + 3*2 + 4*3
        assert_eq!(y, vec![8.5, 20.5]);
    }
}
