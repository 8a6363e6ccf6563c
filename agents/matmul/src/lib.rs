//! Quantized weight matrices (Q8_0, Q4_1) times several rows of activations, each block of
//! weights read once for all the rows.
//!
//! candle multiplies a quantized matrix one activation row at a time, and has no SIMD kernel
//! for Q4_1 at all (a scalar loop per block). Continuous batching sends a few rows (one per
//! generation) through every projection. Here each weight block is loaded, and prepared
//! once (absolute values for Q8_0, nibbles unpacked for Q4_1), for up to four rows while it
//! sits in registers. Weight rows are grouped and interleaved block by block, so that a work
//! item reads one stream of memory: Q8_0 rows by four, their scales kept as f32; Q4_1 rows
//! by eight, one per 32-bit lane of a register, so that one instruction multiplies four
//! nibbles of each of the eight rows by the same four input bytes, and each lane's sum is
//! its row's own (nothing summed across lanes); their f16 scales side by side (one
//! conversion for eight). Several matrices that read the same input are multiplied in one
//! go ([`forward_each`]): one quantization of the input, one meeting of the threads.
//!
//! The products are bit-identical to candle's `QMatMul`: the same activation quantization,
//! the same integer sums, the same float operations in the same order (the tests compare
//! every bit). That matters more than it seems: each layer quantizes its input to 8 bits
//! again, so a difference in the last bit of one value can move a rounding step and grow
//! through the layers into different tokens. A one-row product is bound by reading the
//! weights from memory, so a model kept in Q4_1 reads 0.625 bytes per weight where its
//! Q8_0 copy reads 1.125.
//!
//! [`attention`] holds the other large part of a generation step: one token's attention over
//! the f16 key/value cache.

#![deny(missing_docs)]

pub mod attention;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use half::f16;

/// Values per block (Q8_0 and Q4_1 alike).
const BLOCK: usize = 32;
/// Activation rows per tile: each weight block meets this many rows while in registers.
const TILE_ROWS: usize = 4;
/// Weight rows (outputs) per Q8_0 work item and group.
const GROUP: usize = 4;
/// Weight rows (outputs) per Q4_1 work item and group: one per 32-bit lane of a register.
const Q4_GROUP: usize = 8;

/// Why a product could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MatmulError {
    /// The activations' width is not the matrix's.
    #[error("activations are {found} wide, the matrix takes {expected}")]
    Width {
        /// The matrix's input width.
        expected: usize,
        /// The activations' width.
        found: usize,
    },
    /// The quantized tensor's bytes do not hold its shape.
    #[error("a {rows}×{depth} {dtype:?} matrix needs {expected} bytes, the tensor has {found}")]
    Size {
        /// The quantization.
        dtype: GgmlDType,
        /// Rows (outputs).
        rows: usize,
        /// Input width.
        depth: usize,
        /// Bytes needed.
        expected: usize,
        /// Bytes held.
        found: usize,
    },
    /// A candle operation failed (reading the tensors, building the result).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The SIMD kernel a product runs with. All give the same results; they differ in how the
/// byte products of a block are summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2, FMA and F16C: byte pairs multiplied and summed to 16 bits, then pairs of those to 32.
    Avx2,
    /// AVX-VNNI (256-bit `vpdpbusd`): four byte products summed to 32 bits in one instruction.
    AvxVnni,
    /// AVX-512 VNNI on 256-bit registers (`avx512vl`), for CPUs without AVX-VNNI.
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs, or `None` where none does (not x86-64, or no AVX2).
    pub fn detect() -> Option<Self> {
        Self::supported().last().copied()
    }

    /// Every kernel this CPU runs, slowest first.
    pub fn supported() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                kernels.push(Self::Avx2);
                if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                    kernels.push(Self::Avx512Vnni);
                }
                if is_x86_feature_detected!("avxvnni") {
                    kernels.push(Self::AvxVnni);
                }
            }
        }
        kernels
    }

    fn vnni(self) -> bool {
        matches!(self, Self::AvxVnni | Self::Avx512Vnni)
    }
}

/// Whether this crate multiplies `dtype` on this CPU (some kernel runs here, and the
/// quantization is Q8_0 or Q4_1).
pub fn multiplies(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_1) && Kernel::detect().is_some()
}

/// The weights: rows in groups ([`GROUP`] of Q8_0, [`Q4_GROUP`] of Q4_1), interleaved block
/// by block (group `g`'s blocks at `g * blocks .. (g + 1) * blocks`), so that a work item
/// reads one stream of memory; a last group short of rows is padded with zeros.
enum Blocks {
    /// Signed bytes and a scale per block.
    Q8_0 { groups: Vec<Q8Group> },
    /// A scale, a minimum and nibbles per block.
    Q4_1 { groups: Vec<Q4Group> },
}

/// Block `b` of four rows of Q8_0 weights: for each row, value = scale × byte. The scales
/// sit before the bytes they scale, converted to f32 once at load.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Q8Group {
    scales: [f32; GROUP],
    quants: [[i8; BLOCK]; GROUP],
}

/// Block `b` of eight rows of Q4_1 weights: for each row, value = scale × nibble + minimum.
/// Laid out so that a register holds the eight rows side by side, one per 32-bit lane, and
/// one instruction multiplies each row's four nibbles by the same four input bytes: the
/// products then need no sums across lanes. `nibbles[k][4 * lane + i]` is the file's nibble
/// byte `4k + i` of row `lane`: value `4k + i` in its low half, value `16 + 4k + i` in its
/// high half. The scales and minimums stay f16 as stored (20 bytes per row and block, as in
/// the file), side by side, so that one conversion gives the eight rows' values.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Q4Group {
    scales: [f16; Q4_GROUP],
    mins: [f16; Q4_GROUP],
    nibbles: [[u8; 4 * Q4_GROUP]; 4],
}

/// A quantized weight matrix laid out for [`QuantizedMatrix::forward`]: `rows` outputs, each
/// `depth` inputs wide.
pub struct QuantizedMatrix {
    rows: usize,
    depth: usize,
    blocks: Blocks,
    kernel: Kernel,
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("dtype", &self.dtype())
            .field("rows", &self.rows)
            .field("depth", &self.depth)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl QuantizedMatrix {
    /// The matrix in `tensor` (shaped outputs × inputs) with the fastest kernel this CPU
    /// runs; `None` where this crate would not be faster than candle: the tensor is neither
    /// Q8_0 nor Q4_1, this CPU has no kernel, or it is a Q8_0 shape candle already runs with
    /// its own VNNI tiles (inputs a multiple of 256, outputs of 16, on a VNNI CPU).
    pub fn from_qtensor(tensor: &QTensor) -> Result<Option<Self>, MatmulError> {
        let Some(kernel) = Kernel::detect() else {
            return Ok(None);
        };
        let Ok((rows, depth)) = tensor.shape().dims2() else {
            return Ok(None);
        };
        if tensor.dtype() == GgmlDType::Q8_0 && kernel.vnni() && depth % 256 == 0 && rows % 16 == 0
        {
            return Ok(None);
        }
        Self::with_kernel(tensor, kernel)
    }

    /// The matrix in `tensor` with `kernel`, which must be one of [`Kernel::supported`];
    /// `None` when the tensor is not a 2-D Q8_0 or Q4_1 matrix.
    pub fn with_kernel(tensor: &QTensor, kernel: Kernel) -> Result<Option<Self>, MatmulError> {
        let dtype = tensor.dtype();
        if !matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_1)
            || !Kernel::supported().contains(&kernel)
        {
            return Ok(None);
        }
        let Ok((rows, depth)) = tensor.shape().dims2() else {
            return Ok(None);
        };
        if depth % BLOCK != 0 {
            return Ok(None);
        }
        let data = tensor.data()?;
        let count = rows * depth / BLOCK;
        let block_bytes = dtype.type_size();
        if data.len() != count * block_bytes {
            return Err(MatmulError::Size {
                dtype,
                rows,
                depth,
                expected: count * block_bytes,
                found: data.len(),
            });
        }
        let half_at =
            |block: &[u8], at: usize| f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
        let blocks = depth / BLOCK;
        let blocks = if dtype == GgmlDType::Q8_0 {
            let mut groups = vec![Q8Group::default(); rows.div_ceil(GROUP) * blocks];
            for (index, block) in data.chunks_exact(block_bytes).enumerate() {
                let (row, b) = (index / blocks, index % blocks);
                let (group, lane) = (&mut groups[(row / GROUP) * blocks + b], row % GROUP);
                group.scales[lane] = half_at(block, 0);
                group.quants[lane] = std::array::from_fn(|j| block[2 + j] as i8);
            }
            Blocks::Q8_0 { groups }
        } else {
            let mut groups = vec![Q4Group::default(); rows.div_ceil(Q4_GROUP) * blocks];
            for (index, block) in data.chunks_exact(block_bytes).enumerate() {
                let (row, b) = (index / blocks, index % blocks);
                let (group, lane) = (&mut groups[(row / Q4_GROUP) * blocks + b], row % Q4_GROUP);
                group.scales[lane] = f16::from_le_bytes([block[0], block[1]]);
                group.mins[lane] = f16::from_le_bytes([block[2], block[3]]);
                for (k, chunk) in block[4..].chunks_exact(4).enumerate() {
                    group.nibbles[k][4 * lane..4 * lane + 4].copy_from_slice(chunk);
                }
            }
            Blocks::Q4_1 { groups }
        };
        Ok(Some(Self {
            rows,
            depth,
            blocks,
            kernel,
        }))
    }

    /// The kernel this matrix's products run with.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The weights' quantization.
    pub fn dtype(&self) -> GgmlDType {
        match self.blocks {
            Blocks::Q8_0 { .. } => GgmlDType::Q8_0,
            Blocks::Q4_1 { .. } => GgmlDType::Q4_1,
        }
    }

    /// Bytes the weights take in memory.
    pub fn weight_bytes(&self) -> usize {
        let groups = self.rows.div_ceil(self.group_rows()) * self.blocks();
        match self.blocks {
            Blocks::Q8_0 { .. } => groups * size_of::<Q8Group>(),
            Blocks::Q4_1 { .. } => groups * size_of::<Q4Group>(),
        }
    }

    /// `x` (m × inputs, f32) times this matrix transposed: m × outputs, as candle's
    /// `QMatMul::forward` gives it. The outputs are split across candle's CPU thread pool.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, MatmulError> {
        let mut products = forward_each(&[self], x)?;
        Ok(products.remove(0))
    }

    fn blocks(&self) -> usize {
        self.depth / BLOCK
    }

    /// Weight rows per group, and per work item.
    fn group_rows(&self) -> usize {
        match self.blocks {
            Blocks::Q8_0 { .. } => GROUP,
            Blocks::Q4_1 { .. } => Q4_GROUP,
        }
    }

    /// Work items of a product with `tiles` tiles of activation rows: (group of weight rows,
    /// tile), tile-minor, so an item's weights stay in cache across its tiles.
    fn items(&self, tiles: usize) -> usize {
        self.rows.div_ceil(self.group_rows()) * tiles
    }

    /// Work item `item` of `out` (m × rows) = activations × selfᵀ (see [`Self::items`]).
    fn run_item(&self, item: usize, activations: &Activations, out: &kernels::Output<'_>) {
        let m = activations.rows;
        let tiles = m.div_ceil(TILE_ROWS);
        let width = self.group_rows();
        let (group, tile) = (item / tiles, item % tiles);
        let columns = group * width..self.rows.min((group + 1) * width);
        let rows = tile * TILE_ROWS..m.min((tile + 1) * TILE_ROWS);
        kernels::tile(self, activations, rows, columns, out);
    }
}

/// `x` (m × inputs, f32) times each of `matrices` transposed, as
/// [`QuantizedMatrix::forward`] gives each product, in one go: the activations are
/// quantized once, and every product's work items go to candle's thread pool together, so
/// its threads meet once for all of them (a layer's query, key and value projections read
/// the same input, and so do its gate and up projections).
pub fn forward_each(matrices: &[&QuantizedMatrix], x: &Tensor) -> Result<Vec<Tensor>, MatmulError> {
    let (m, depth) = x.dims2()?;
    if let Some(matrix) = matrices.iter().find(|matrix| matrix.depth != depth) {
        return Err(MatmulError::Width {
            expected: matrix.depth,
            found: depth,
        });
    }
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let activations = Activations::quantize(&values, m, depth);
    let mut products: Vec<Vec<f32>> = matrices
        .iter()
        .map(|matrix| vec![0f32; m * matrix.rows])
        .collect();
    let tiles = m.div_ceil(TILE_ROWS);
    // Each product's first item in the combined sequence, and the total.
    let mut firsts = Vec::with_capacity(matrices.len());
    let mut total = 0;
    for matrix in matrices {
        firsts.push(total);
        total += matrix.items(tiles);
    }
    {
        let outs: Vec<kernels::Output<'_>> = products
            .iter_mut()
            .map(|p| kernels::Output::new(p))
            .collect();
        candle_core::utils::barrier_pool().execute_chunked(total, |items| {
            for item in items {
                let index = firsts.partition_point(|&first| first <= item) - 1;
                matrices[index].run_item(item - firsts[index], &activations, &outs[index]);
            }
        });
    }
    matrices
        .iter()
        .zip(products)
        .map(|(matrix, product)| Ok(Tensor::from_vec(product, (m, matrix.rows), x.device())?))
        .collect()
}

/// Activation rows quantized as candle quantizes them for these products (`BlockQ8_0` and
/// `BlockQ8_1::from_float`, which agree on the values): per block, the scale is the largest
/// magnitude over 127 (rounded to f16, which is what the product reads) and each value is
/// rounded to the nearest multiple of it; Q8_1 adds the block's sum times its scale, in f16.
struct Activations {
    rows: usize,
    quants: Vec<[i8; BLOCK]>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl Activations {
    /// Every projection quantizes its input before the product, on the calling thread while
    /// the pool's other threads wait, so its cost adds to every step whole. With AVX2 and
    /// F16C each block is quantized in registers ([`kernels::quantize_block`]), to the same
    /// bits as the portable path, which rounds through a libm call per value.
    fn quantize(values: &[f32], rows: usize, depth: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU has AVX2 and F16C, checked just above.
            #[allow(unsafe_code)]
            return unsafe { Self::quantize_avx2(values, rows, depth) };
        }
        Self::quantize_portable(values, rows, depth)
    }

    /// [`Activations::quantize_portable`] with each block's largest magnitude, rounding and
    /// sum in AVX2 registers and its f16 roundings by F16C ([`kernels::quantize_block`]).
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn quantize_avx2(values: &[f32], rows: usize, depth: usize) -> Self {
        Self::quantize_with(values, rows, depth, |block| {
            let block: &[f32; BLOCK] = block.try_into().expect("chunks of a block");
            kernels::quantize_block(block)
        })
    }

    /// Rounds half away from zero (`f32::round`), as candle does.
    fn quantize_portable(values: &[f32], rows: usize, depth: usize) -> Self {
        Self::quantize_with(values, rows, depth, |block| {
            let amax = block.iter().fold(0f32, |amax, x| amax.max(x.abs()));
            let d = amax / 127.0;
            let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: [i8; BLOCK] = std::array::from_fn(|j| f32::round(block[j] * inverse) as i8);
            let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
            let scale = f16::from_f32(d);
            (
                scale.to_f32(),
                q,
                (f16::from_f32(sum as f32) * scale).to_f32(),
            )
        })
    }

    /// Quantizes `values` block by block: `block` gives a block's scale (its largest
    /// magnitude over 127, rounded to f16), its values over the unrounded scale rounded,
    /// and their sum times the scale, rounded to f16 (Q8_1's `s`).
    #[inline(always)]
    fn quantize_with(
        values: &[f32],
        rows: usize,
        depth: usize,
        block: impl Fn(&[f32]) -> (f32, [i8; BLOCK], f32),
    ) -> Self {
        let count = rows * depth / BLOCK;
        let mut quants = Vec::with_capacity(count);
        let mut scales = Vec::with_capacity(count);
        let mut sums = Vec::with_capacity(count);
        for values in values.chunks_exact(BLOCK) {
            let (scale, q, sum) = block(values);
            scales.push(scale);
            sums.push(sum);
            quants.push(q);
        }
        Self {
            rows,
            quants,
            scales,
            sums,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod kernels {
    //! The x86 tiles. Each function is compiled for its kernel's features and is only
    //! called with a [`Kernel`] from [`Kernel::supported`], which checked them at run time.

    use std::arch::x86_64::*;
    use std::marker::PhantomData;
    use std::ops::Range;

    use super::{
        Activations, BLOCK, Blocks, GROUP, Kernel, Q4_GROUP, Q4Group, Q8Group, QuantizedMatrix,
        TILE_ROWS,
    };

    /// The product's output, written by several threads at once: each (row, column) by
    /// exactly one work item.
    pub(super) struct Output<'a> {
        start: *mut f32,
        len: usize,
        _out: PhantomData<&'a mut [f32]>,
    }

    // SAFETY: the work items write disjoint cells (see `tile`), and the pool returns only
    // after every item is done, while `out` is still borrowed.
    unsafe impl Sync for Output<'_> {}

    impl<'a> Output<'a> {
        pub(super) fn new(out: &'a mut [f32]) -> Self {
            Self {
                start: out.as_mut_ptr(),
                len: out.len(),
                _out: PhantomData,
            }
        }

        fn write(&self, index: usize, value: f32) {
            assert!(index < self.len, "output cell {index} of {}", self.len);
            // SAFETY: in bounds (checked above); no other item writes this cell.
            unsafe { self.start.add(index).write(value) }
        }
    }

    /// Outputs `rows` × `columns` of the product, written into `out` (m × matrix rows).
    /// `columns` is one work item's group: a group's rows (four of Q8_0, eight of Q4_1),
    /// or the matrix's last ones.
    pub(super) fn tile(
        matrix: &QuantizedMatrix,
        activations: &Activations,
        rows: Range<usize>,
        columns: Range<usize>,
        out: &Output<'_>,
    ) {
        if let Blocks::Q4_1 { groups } = &matrix.blocks {
            // A group holds eight rows of weights (zeros past the matrix's last row).
            let blocks = matrix.blocks();
            let group = columns.start / Q4_GROUP;
            let weights = &groups[group * blocks..(group + 1) * blocks];
            let results = match rows.len() {
                1 => dispatch_q4::<1>(matrix.kernel, weights, activations, &rows, blocks),
                2 => dispatch_q4::<2>(matrix.kernel, weights, activations, &rows, blocks),
                3 => dispatch_q4::<3>(matrix.kernel, weights, activations, &rows, blocks),
                4 => dispatch_q4::<4>(matrix.kernel, weights, activations, &rows, blocks),
                rows => unreachable!("no tile for {rows} rows"),
            };
            write_tile(out, matrix.rows, &rows, &columns, |r, c| results[r][c]);
            return;
        }
        let run = |rows: Range<usize>, columns: Range<usize>| {
            let results = match (rows.len(), columns.len()) {
                (1, 4) => dispatch::<1, 4>(matrix, activations, &rows, &columns),
                (2, 4) => dispatch::<2, 4>(matrix, activations, &rows, &columns),
                (3, 2) => dispatch::<3, 2>(matrix, activations, &rows, &columns),
                (4, 2) => dispatch::<4, 2>(matrix, activations, &rows, &columns),
                (1, 1) => dispatch::<1, 1>(matrix, activations, &rows, &columns),
                (2, 1) => dispatch::<2, 1>(matrix, activations, &rows, &columns),
                (3, 1) => dispatch::<3, 1>(matrix, activations, &rows, &columns),
                (4, 1) => dispatch::<4, 1>(matrix, activations, &rows, &columns),
                shape => unreachable!("no tile for {shape:?}"),
            };
            write_tile(out, matrix.rows, &rows, &columns, |r, c| results[r * 4 + c]);
        };
        // Whole tiles of four columns for one or two rows, of two for three or four (the
        // accumulators, one register per output, must fit in sixteen); single columns at
        // the matrix's end.
        let step = if rows.len() <= 2 { 4 } else { 2 };
        let mut column = columns.start;
        while column + step <= columns.end {
            run(rows.clone(), column..column + step);
            column += step;
        }
        for column in column..columns.end {
            run(rows.clone(), column..column + 1);
        }
    }

    /// Writes a tile into `out` (m × `width`): output (r, c) of the tile at `rows` ×
    /// `columns` is `result(r, c)`.
    fn write_tile(
        out: &Output<'_>,
        width: usize,
        rows: &Range<usize>,
        columns: &Range<usize>,
        result: impl Fn(usize, usize) -> f32,
    ) {
        for (r, row) in rows.clone().enumerate() {
            for (c, column) in columns.clone().enumerate() {
                out.write(row * width + column, result(r, c));
            }
        }
    }

    /// `N` rows of `count` items each, from row `start` of `items` (rows laid end to end).
    fn rows_of<T, const N: usize>(items: &[T], start: usize, count: usize) -> [&[T]; N] {
        std::array::from_fn(|i| &items[(start + i) * count..(start + i + 1) * count])
    }

    /// One R × C tile with the matrix's kernel; results row-major in rows of four.
    fn dispatch<const R: usize, const C: usize>(
        matrix: &QuantizedMatrix,
        activations: &Activations,
        rows: &Range<usize>,
        columns: &Range<usize>,
    ) -> [f32; 16] {
        let blocks = matrix.blocks();
        let inputs = Inputs::<R> {
            quants: rows_of(&activations.quants, rows.start, blocks),
            scales: rows_of(&activations.scales, rows.start, blocks),
            sums: rows_of(&activations.sums, rows.start, blocks),
        };
        let Blocks::Q8_0 { groups } = &matrix.blocks else {
            unreachable!("Q4_1 tiles go through dispatch_q4")
        };
        let group = columns.start / GROUP;
        let weights = Q8Weights::<C> {
            groups: &groups[group * blocks..(group + 1) * blocks],
            first: columns.start % GROUP,
        };
        assert!(
            weights.first + C <= GROUP,
            "a tile's columns lie in one group"
        );
        // SAFETY: `matrix.kernel` came from `Kernel::supported`, so this CPU has its
        // features; every slice passed holds `blocks` entries (`rows_of`).
        unsafe {
            match matrix.kernel {
                Kernel::Avx2 => q8_avx2(blocks, &weights, &inputs),
                Kernel::AvxVnni => q8_avx_vnni(blocks, &weights, &inputs),
                Kernel::Avx512Vnni => q8_avx512_vnni(blocks, &weights, &inputs),
            }
        }
    }

    /// One R × 8 tile of a Q4_1 matrix: `weights` is one group's `blocks` blocks.
    fn dispatch_q4<const R: usize>(
        kernel: Kernel,
        weights: &[Q4Group],
        activations: &Activations,
        rows: &Range<usize>,
        blocks: usize,
    ) -> [[f32; Q4_GROUP]; TILE_ROWS] {
        let inputs = Inputs::<R> {
            quants: rows_of(&activations.quants, rows.start, blocks),
            scales: rows_of(&activations.scales, rows.start, blocks),
            sums: rows_of(&activations.sums, rows.start, blocks),
        };
        assert_eq!(weights.len(), blocks, "one group's blocks");
        // SAFETY: `kernel` came from `Kernel::supported`, so this CPU has its features;
        // `weights` and every slice in `inputs` hold `blocks` entries.
        let results = unsafe {
            match kernel {
                Kernel::Avx2 => q4_avx2(blocks, weights, &inputs),
                Kernel::AvxVnni => q4_avx_vnni(blocks, weights, &inputs),
                Kernel::Avx512Vnni => q4_avx512_vnni(blocks, weights, &inputs),
            }
        };
        let mut tile = [[0f32; Q4_GROUP]; TILE_ROWS];
        tile[..R].copy_from_slice(&results);
        tile
    }

    struct Inputs<'a, const R: usize> {
        quants: [&'a [[i8; BLOCK]]; R],
        scales: [&'a [f32]; R],
        sums: [&'a [f32]; R],
    }

    /// One group's blocks, and the first of the tile's `C` columns within the group.
    struct Q8Weights<'a, const C: usize> {
        groups: &'a [Q8Group],
        first: usize,
    }

    /// The tile functions for one kernel: `$dot(acc, a, b)` adds to each of `acc`'s eight
    /// 32-bit lanes the sum of four byte products (unsigned `a` times signed `b`), as AVX2's
    /// pair sums do.
    macro_rules! tile_kernels {
        ($q8:ident, $q4:ident, $features:literal, $dot:ident) => {
            /// Q8_0: candle's `vec_dot_q8_0_q8_0` for each (row, column), interleaved.
            #[target_feature(enable = $features)]
            unsafe fn $q8<const R: usize, const C: usize>(
                blocks: usize,
                weights: &Q8Weights<'_, C>,
                inputs: &Inputs<'_, R>,
            ) -> [f32; 16] {
                let mut acc = [[_mm256_setzero_ps(); C]; R];
                for b in 0..blocks {
                    let mut signs = [_mm256_setzero_si256(); C];
                    let mut magnitudes = [_mm256_setzero_si256(); C];
                    let mut weight_scales = [_mm256_setzero_ps(); C];
                    // SAFETY: `b` < blocks, the length of every slice (`dispatch`).
                    let group = unsafe { weights.groups.get_unchecked(b) };
                    for c in 0..C {
                        // SAFETY: `first + c` < GROUP (`dispatch`).
                        let (block, scale) = unsafe {
                            (
                                group.quants.get_unchecked(weights.first + c),
                                *group.scales.get_unchecked(weights.first + c),
                            )
                        };
                        // SAFETY: a block is 32 readable bytes.
                        let w = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
                        signs[c] = w;
                        magnitudes[c] = _mm256_sign_epi8(w, w);
                        weight_scales[c] = _mm256_set1_ps(scale);
                    }
                    for r in 0..R {
                        // SAFETY: as above.
                        let (block, scale) = unsafe {
                            (
                                inputs.quants[r].get_unchecked(b),
                                *inputs.scales[r].get_unchecked(b),
                            )
                        };
                        // SAFETY: a block is 32 readable bytes.
                        let x = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
                        let input_scale = _mm256_set1_ps(scale);
                        for c in 0..C {
                            // candle's order: d = weight scale × input scale, then
                            // acc = d × float(sums) + acc.
                            let sums = $dot(
                                _mm256_setzero_si256(),
                                magnitudes[c],
                                _mm256_sign_epi8(x, signs[c]),
                            );
                            let d = _mm256_mul_ps(weight_scales[c], input_scale);
                            acc[r][c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc[r][c]);
                        }
                    }
                }
                let mut results = [0f32; 16];
                for r in 0..R {
                    for c in 0..C {
                        results[r * 4 + c] = horizontal_sum(acc[r][c]);
                    }
                }
                results
            }

            /// Q4_1 against Q8_1, as candle's `vec_dot_q4_1_q8_1` computes each output:
            /// per block, the exact integer Σ nibble × input, then in f32 and in this order
            /// `sum += Σ × weight scale × input scale + minimum × input block's scaled sum`.
            /// Here the group's eight weight rows go through those steps side by side, one
            /// per lane, so each output is bit-identical to candle's. Each instruction
            /// multiplies four nibbles of every lane by the same four input bytes
            /// (broadcast), so a lane's integer sum is its own: nothing is summed across lanes.
            #[target_feature(enable = $features)]
            unsafe fn $q4<const R: usize>(
                blocks: usize,
                weights: &[Q4Group],
                inputs: &Inputs<'_, R>,
            ) -> [[f32; Q4_GROUP]; R] {
                let low = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..blocks {
                    // SAFETY: `b` < blocks, the length of `weights` (`dispatch_q4`).
                    let group = unsafe { weights.get_unchecked(b) };
                    // SAFETY: eight f16 (16 readable bytes) each.
                    let (scales, mins) = unsafe {
                        (
                            _mm256_cvtph_ps(_mm_loadu_si128(group.scales.as_ptr().cast())),
                            _mm256_cvtph_ps(_mm_loadu_si128(group.mins.as_ptr().cast())),
                        )
                    };
                    // Nibbles of values 4k.. (even n = 2k) and 16 + 4k.. (odd n), every lane.
                    let nibbles: [__m256i; 8] = std::array::from_fn(|n| {
                        // SAFETY: a chunk of the group is 32 readable bytes.
                        let packed =
                            unsafe { _mm256_loadu_si256(group.nibbles[n / 2].as_ptr().cast()) };
                        if n % 2 == 0 {
                            _mm256_and_si256(packed, low)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low)
                        }
                    });
                    for (r, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: as above.
                        let (block, scale, sum) = unsafe {
                            (
                                inputs.quants[r].get_unchecked(b),
                                *inputs.scales[r].get_unchecked(b),
                                *inputs.sums[r].get_unchecked(b),
                            )
                        };
                        // Input bytes `at..at + 4`, in every lane.
                        let four = |at: usize| {
                            let bytes = [block[at], block[at + 1], block[at + 2], block[at + 3]];
                            _mm256_set1_epi32(i32::from_le_bytes(bytes.map(|b| b as u8)))
                        };
                        // Two chains of sums, so that each waits on half as many products.
                        let (mut first, mut second) =
                            (_mm256_setzero_si256(), _mm256_setzero_si256());
                        for k in 0..4 {
                            first = $dot(first, nibbles[2 * k], four(4 * k));
                            second = $dot(second, nibbles[2 * k + 1], four(16 + 4 * k));
                        }
                        let totals = _mm256_cvtepi32_ps(_mm256_add_epi32(first, second));
                        let scaled =
                            _mm256_mul_ps(_mm256_mul_ps(totals, scales), _mm256_set1_ps(scale));
                        let offsets = _mm256_mul_ps(mins, _mm256_set1_ps(sum));
                        *acc = _mm256_add_ps(*acc, _mm256_add_ps(scaled, offsets));
                    }
                }
                let mut results = [[0f32; Q4_GROUP]; R];
                for (result, acc) in results.iter_mut().zip(acc) {
                    // SAFETY: eight writable floats.
                    unsafe { _mm256_storeu_ps(result.as_mut_ptr(), acc) };
                }
                results
            }
        };
    }

    tile_kernels!(q8_avx2, q4_avx2, "avx2,fma,f16c", dot_avx2);
    tile_kernels!(
        q8_avx_vnni,
        q4_avx_vnni,
        "avx2,fma,f16c,avxvnni",
        dot_avx_vnni
    );
    tile_kernels!(
        q8_avx512_vnni,
        q4_avx512_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        dot_avx512_vnni
    );

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot_avx2(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
        // The pair sums cannot saturate: an unsigned byte here is at most 128 (a magnitude)
        // and a signed one at most 127 in magnitude.
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(unsigned, signed)),
        )
    }

    #[inline]
    #[target_feature(enable = "avxvnni")]
    fn dot_avx_vnni(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, unsigned, signed)
    }

    #[inline]
    #[target_feature(enable = "avx512vnni,avx512vl")]
    fn dot_avx512_vnni(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, unsigned, signed)
    }

    /// One block of activations as [`super::Activations::quantize_portable`] quantizes it
    /// (scale, values, sum), bit for bit: the largest magnitude is exact in any order (and
    /// `max` keeps the running value where a lane is NaN, as `f32::max` does); rounding
    /// half away from zero is the truncation of `x + copysign(0.49999997, x)` (what LLVM
    /// makes of `f32::round` with SSE4.1); clamping to the i8 range, with NaN set to 0,
    /// gives the saturating cast's values. The f16 roundings (`half`'s, to nearest even)
    /// are F16C's with the same rounding.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn quantize_block(block: &[f32; BLOCK]) -> (f32, [i8; BLOCK], f32) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        // SAFETY: `block` holds 32 values: four unaligned loads of eight.
        let lanes: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(block.as_ptr().add(8 * k)) });
        let mut amax = _mm256_setzero_ps();
        for &x in &lanes {
            // `_mm256_max_ps(a, b)` gives `b` where either is NaN.
            amax = _mm256_max_ps(_mm256_and_ps(x, abs_mask), amax);
        }
        let high = _mm256_extractf128_ps(amax, 1);
        let amax = _mm_max_ps(high, _mm256_castps256_ps128(amax));
        let amax = _mm_max_ps(amax, _mm_movehl_ps(amax, amax));
        let amax = _mm_cvtss_f32(_mm_max_ss(amax, _mm_movehdup_ps(amax)));
        let d = amax / 127.0;
        let inverse = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let sign = _mm256_set1_ps(-0.0);
        let almost_half = _mm256_set1_ps(0.499_999_97);
        let (low, high) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
        let ints: [__m256i; 4] = lanes.map(|x| {
            let x = _mm256_mul_ps(x, inverse);
            let nudge = _mm256_or_ps(_mm256_and_ps(x, sign), almost_half);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_ps(
                x, nudge,
            ));
            // NaN to 0 first: `max` would turn it into the low bound.
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let r = _mm256_min_ps(_mm256_max_ps(r, low), high);
            _mm256_cvttps_epi32(r)
        });
        let total = _mm256_add_epi32(
            _mm256_add_epi32(ints[0], ints[1]),
            _mm256_add_epi32(ints[2], ints[3]),
        );
        let total = _mm_add_epi32(
            _mm256_extracti128_si256(total, 1),
            _mm256_castsi256_si128(total),
        );
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b01_00_11_10>(total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b10_11_00_01>(total));
        // Packing works within 128-bit lanes: put the eight groups of four back in order.
        let words = _mm256_packs_epi16(
            _mm256_packs_epi32(ints[0], ints[1]),
            _mm256_packs_epi32(ints[2], ints[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(words, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut q = [0i8; BLOCK];
        // SAFETY: `q` holds 32 bytes.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes) };
        let sum = _mm_cvtsi128_si32(total) as f32;
        // Through f16 and back: the scale, the sum, and their product (`half`'s f16 product
        // is the f32 product of the two, rounded).
        let f16_round = |x: f32| {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
                _mm_set_ss(x),
            )))
        };
        let scale = f16_round(d);
        (scale, q, f16_round(f16_round(sum) * scale))
    }

    /// The sum of eight lanes in candle's order (`hsum_float_8`).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal_sum(x: __m256) -> f32 {
        let high = _mm256_extractf128_ps(x, 1);
        let sum = _mm_add_ps(high, _mm256_castps256_ps128(x));
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        let sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
        _mm_cvtss_f32(sum)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernels {
    //! No kernels off x86-64: [`Kernel::supported`] is empty, so no matrix is ever built.

    use std::marker::PhantomData;
    use std::ops::Range;

    use super::{Activations, QuantizedMatrix};

    pub(super) struct Output<'a>(PhantomData<&'a mut [f32]>);

    impl<'a> Output<'a> {
        pub(super) fn new(_out: &'a mut [f32]) -> Self {
            Self(PhantomData)
        }
    }

    pub(super) fn tile(
        _matrix: &QuantizedMatrix,
        _activations: &Activations,
        _rows: Range<usize>,
        _columns: Range<usize>,
        _out: &Output<'_>,
    ) {
        unreachable!("no QuantizedMatrix is built without a kernel")
    }
}

#[cfg(test)]
mod tests;
