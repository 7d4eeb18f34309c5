//! A group of ranks in separate processes, or on separate machines, over TCP: rank 0 listens and
//! the others connect to it ([`TcpCommunicator::root`], [`TcpCommunicator::member`]). Each
//! collective sends every rank's tensor to rank 0, which sends all of them back to every rank;
//! each rank then computes the result in rank order ([`Exchange`]), so all get the same bits, the
//! same as with [`super::LocalCommunicator`]. A star through rank 0 over host memory: for CPU
//! runs and tests of a multi-process setup, not for speed (GPUs want NCCL's rings).
//!
//! The wire: a member first sends its rank and the world size (u64 little-endian each); a tensor
//! is its dtype (one byte), its rank and dims (u64 each) and its bytes (u64 length, then the
//! little-endian elements).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use super::comm::tp_error;
use super::exchange::Exchange;
use crate::error::{Error, Result};

/// One rank of a group over TCP.
#[derive(Debug)]
pub struct TcpCommunicator {
    rank: usize,
    world_size: usize,
    /// Rank 0: a stream per other rank, by rank; the others: the stream to rank 0.
    streams: Mutex<Vec<TcpStream>>,
}

impl TcpCommunicator {
    /// Rank 0 of `world_size`: accepts the other ranks on `listener` (each says its rank first).
    pub fn root(listener: &TcpListener, world_size: usize) -> Result<Self> {
        let err = |m: String| tp_error(world_size, m);
        let mut streams: Vec<Option<TcpStream>> = (1..world_size).map(|_| None).collect();
        while streams.iter().any(Option::is_none) {
            let (mut stream, peer) = listener
                .accept()
                .map_err(|e| err(format!("rank 0 accepting: {e}")))?;
            let [rank, ws] = read_u64s(&mut stream).map_err(|e| err(format!("{peer}: {e}")))?;
            let (rank, ws) = (rank as usize, ws as usize);
            if ws != world_size || rank == 0 || rank >= world_size {
                return Err(err(format!(
                    "{peer} says it is rank {rank} of {ws}; rank 0 expects ranks 1..{world_size}"
                )));
            }
            if streams[rank - 1].replace(stream).is_some() {
                return Err(err(format!("rank {rank} connected twice")));
            }
        }
        Ok(Self {
            rank: 0,
            world_size,
            streams: Mutex::new(ready(streams.into_iter().flatten().collect(), world_size)?),
        })
    }

    /// Rank `rank` (> 0) of `world_size`: connects to rank 0 at `addr`, retrying until `timeout`
    /// (rank 0 may not listen yet).
    pub fn member(
        addr: SocketAddr,
        (rank, world_size): (usize, usize),
        timeout: Duration,
    ) -> Result<Self> {
        let err = |m: String| tp_error(world_size, m);
        if rank == 0 || rank >= world_size {
            return Err(err(format!(
                "rank {rank}: members are ranks 1..{world_size}"
            )));
        }
        let start = Instant::now();
        let mut stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= timeout => {
                    return Err(err(format!(
                        "rank {rank} connecting to rank 0 at {addr}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let hello = [rank as u64, world_size as u64];
        write_all(&mut stream, &hello.map(u64::to_le_bytes).concat())
            .map_err(|e| err(format!("rank {rank} greeting rank 0: {e}")))?;
        Ok(Self {
            rank,
            world_size,
            streams: Mutex::new(ready(vec![stream], world_size)?),
        })
    }
}

/// Streams with Nagle's delay off (a collective's messages are small and waited for).
fn ready(streams: Vec<TcpStream>, world_size: usize) -> Result<Vec<TcpStream>> {
    for s in &streams {
        s.set_nodelay(true)
            .map_err(|e| tp_error(world_size, format!("TCP_NODELAY: {e}")))?;
    }
    Ok(streams)
}

impl Exchange for TcpCommunicator {
    fn position(&self) -> (usize, usize) {
        (self.rank, self.world_size)
    }

    fn exchange(&self, x: &Tensor) -> Result<Arc<Vec<Tensor>>> {
        let ws = self.world_size;
        let err = |m: String| tp_error(ws, m);
        let mut streams = self
            .streams
            .lock()
            .map_err(|_| err("a thread panicked inside a collective".into()))?;
        let frame = encode(x)?;
        if self.rank == 0 {
            let mut frames = vec![frame];
            for (i, s) in streams.iter_mut().enumerate() {
                let f = read_frame(s).map_err(|e| err(format!("from rank {}: {e}", i + 1)))?;
                frames.push(f);
            }
            let all = frames.concat();
            for (i, s) in streams.iter_mut().enumerate() {
                write_all(s, &all).map_err(|e| err(format!("to rank {}: {e}", i + 1)))?;
            }
            return Ok(Arc::new(
                frames
                    .iter()
                    .map(|f| decode(f, x.device()))
                    .collect::<Result<_>>()?,
            ));
        }
        let s = &mut streams[0];
        write_all(s, &frame).map_err(|e| err(format!("to rank 0: {e}")))?;
        let parts = (0..ws)
            .map(|r| {
                let f = read_frame(s).map_err(|e| err(format!("rank {r}'s tensor: {e}")))?;
                decode(&f, x.device())
            })
            .collect::<Result<_>>()?;
        Ok(Arc::new(parts))
    }
}

/// The dtypes a tensor crosses the wire in, by code.
const DTYPES: [DType; 7] = [
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::U32,
    DType::I64,
    DType::U8,
];

/// `x` as one frame: dtype, rank, dims, byte length, bytes.
fn encode(x: &Tensor) -> Result<Vec<u8>> {
    let code = DTYPES
        .iter()
        .position(|&d| d == x.dtype())
        .ok_or_else(|| Error::unsupported(format!("{:?} tensors over TCP", x.dtype())))?;
    let flat = x.to_device(&Device::Cpu)?.flatten_all()?;
    let bytes: Vec<u8> = match x.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U32 => flat
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => flat.to_vec1::<u8>()?,
    };
    let mut frame = vec![code as u8];
    frame.extend((x.rank() as u64).to_le_bytes());
    for &d in x.dims() {
        frame.extend((d as u64).to_le_bytes());
    }
    frame.extend((bytes.len() as u64).to_le_bytes());
    frame.extend(bytes);
    Ok(frame)
}

/// A frame back into a tensor on `device`.
fn decode(frame: &[u8], device: &Device) -> Result<Tensor> {
    let bad = || Error::input("a malformed tensor frame over TCP".to_string());
    let (&code, mut rest) = frame.split_first().ok_or_else(bad)?;
    let dtype = *DTYPES.get(code as usize).ok_or_else(bad)?;
    let mut next = || -> Result<usize> {
        let (n, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        rest = tail;
        Ok(u64::from_le_bytes(*n) as usize)
    };
    let rank = next()?;
    let dims = (0..rank).map(|_| next()).collect::<Result<Vec<_>>>()?;
    let len = next()?;
    let bytes = rest.get(..len).ok_or_else(bad)?;
    Ok(Tensor::from_raw_buffer(bytes, dtype, &dims, &Device::Cpu)?.to_device(device)?)
}

/// Reads one frame (its header tells its length).
fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut code = [0u8; 1];
    s.read_exact(&mut code)?;
    let mut frame = code.to_vec();
    let [rank] = read_u64s::<1>(s)?;
    frame.extend(rank.to_le_bytes());
    for _ in 0..rank {
        let [d] = read_u64s::<1>(s)?;
        frame.extend(d.to_le_bytes());
    }
    let [len] = read_u64s::<1>(s)?;
    frame.extend(len.to_le_bytes());
    let start = frame.len();
    frame.resize(start + len as usize, 0);
    s.read_exact(&mut frame[start..])?;
    Ok(frame)
}

fn read_u64s<const N: usize>(s: &mut TcpStream) -> std::io::Result<[u64; N]> {
    let mut out = [0u64; N];
    for v in &mut out {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        *v = u64::from_le_bytes(b);
    }
    Ok(out)
}

fn write_all(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::Communicator;

    #[test]
    fn collectives_over_tcp_give_every_rank_the_same_result() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let results = std::thread::scope(|s| {
            let listener = &listener;
            let handles: Vec<_> = (0..3)
                .map(|rank| {
                    s.spawn(move || -> Result<Vec<Vec<Vec<f32>>>> {
                        let c = if rank == 0 {
                            TcpCommunicator::root(listener, 3)?
                        } else {
                            TcpCommunicator::member(addr, (rank, 3), Duration::from_secs(10))?
                        };
                        let r = rank as f32;
                        let x = Tensor::new(&[[r, 10.0 * r], [0.5, 1.0]], &Device::Cpu)?;
                        let mut out = Vec::new();
                        for _ in 0..5 {
                            out.push(c.all_reduce_sum(&x)?.to_vec2::<f32>()?);
                            out.push(c.all_gather(&x, 1)?.to_vec2::<f32>()?);
                            out.push(c.broadcast(&x, 2)?.to_vec2::<f32>()?);
                        }
                        // Other dtypes cross the wire unchanged.
                        let ids = Tensor::new(&[rank as u32, 7], &Device::Cpu)?;
                        let ids: Vec<u32> = c.all_gather(&ids, 0)?.to_vec1()?;
                        assert_eq!(ids, vec![0, 7, 1, 7, 2, 7]);
                        let h = x.to_dtype(DType::BF16)?;
                        let h = c.all_reduce_sum(&h)?.to_dtype(DType::F32)?;
                        out.push(h.to_vec2::<f32>()?);
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread"))
                .collect::<Result<Vec<_>>>()
        })?;
        assert_eq!(results[0][0], vec![vec![3.0, 30.0], vec![1.5, 3.0]]);
        assert_eq!(results[0][2], vec![vec![2.0, 20.0], vec![0.5, 1.0]]);
        assert!(results.iter().all(|r| r == &results[0]));
        Ok(())
    }
}
