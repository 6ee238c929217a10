//! Facts of the TFLite FlatBuffers schema used here: table field ids, enum values and the
//! builtin-operator codes, written down from the format's definition (schema.fbs).

/// `Model` fields.
pub mod model {
    pub const VERSION: u16 = 0;
    pub const OPERATOR_CODES: u16 = 1;
    pub const SUBGRAPHS: u16 = 2;
    pub const DESCRIPTION: u16 = 3;
    pub const BUFFERS: u16 = 4;
}

/// `OperatorCode` fields.
pub mod opcode {
    pub const DEPRECATED_BUILTIN_CODE: u16 = 0;
    pub const CUSTOM_CODE: u16 = 1;
    pub const VERSION: u16 = 2;
    pub const BUILTIN_CODE: u16 = 3;
}

/// `SubGraph` fields.
pub mod subgraph {
    pub const TENSORS: u16 = 0;
    pub const INPUTS: u16 = 1;
    pub const OUTPUTS: u16 = 2;
    pub const OPERATORS: u16 = 3;
    pub const NAME: u16 = 4;
}

/// `Tensor` fields.
pub mod tensor {
    pub const SHAPE: u16 = 0;
    pub const TYPE: u16 = 1;
    pub const BUFFER: u16 = 2;
    pub const NAME: u16 = 3;
    pub const QUANTIZATION: u16 = 4;
}

/// `QuantizationParameters` fields.
pub mod quant {
    pub const SCALE: u16 = 2;
    pub const ZERO_POINT: u16 = 3;
    pub const DETAILS_TYPE: u16 = 4;
    pub const QUANTIZED_DIMENSION: u16 = 6;
}

/// `Operator` fields.
pub mod operator {
    pub const OPCODE_INDEX: u16 = 0;
    pub const INPUTS: u16 = 1;
    pub const OUTPUTS: u16 = 2;
    pub const BUILTIN_OPTIONS_TYPE: u16 = 3;
    pub const BUILTIN_OPTIONS: u16 = 4;
    pub const CUSTOM_OPTIONS: u16 = 5;
}

/// `Buffer` fields.
pub mod buffer {
    pub const DATA: u16 = 0;
    pub const OFFSET: u16 = 1;
    pub const SIZE: u16 = 2;
}

/// `TensorType` values.
pub mod ttype {
    pub const FLOAT32: i8 = 0;
    pub const INT32: i8 = 2;
    pub const UINT8: i8 = 3;
    pub const INT8: i8 = 9;

    pub fn name(t: i8) -> &'static str {
        match t {
            0 => "FLOAT32",
            1 => "FLOAT16",
            2 => "INT32",
            3 => "UINT8",
            4 => "INT64",
            5 => "STRING",
            6 => "BOOL",
            7 => "INT16",
            8 => "COMPLEX64",
            9 => "INT8",
            10 => "FLOAT64",
            _ => "another type",
        }
    }
}

/// `BuiltinOperator` values.
pub mod op {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONCATENATION: i32 = 2;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const MAX_POOL_2D: i32 = 17;
    pub const MUL: i32 = 18;
    pub const RELU: i32 = 19;
    pub const RELU_N1_TO_1: i32 = 20;
    pub const RELU6: i32 = 21;
    pub const RESHAPE: i32 = 22;
    pub const RESIZE_BILINEAR: i32 = 23;
    pub const SOFTMAX: i32 = 25;
    pub const TANH: i32 = 28;
    pub const PAD: i32 = 34;
    pub const MEAN: i32 = 40;
    pub const SUB: i32 = 41;
    pub const SPLIT: i32 = 49;
    pub const SQUEEZE: i32 = 43;
    pub const TRANSPOSE: i32 = 39;
    pub const STRIDED_SLICE: i32 = 45;
    pub const PRELU: i32 = 54;
    pub const MAXIMUM: i32 = 55;
    pub const MINIMUM: i32 = 57;
    pub const SLICE: i32 = 65;
    pub const SHAPE: i32 = 77;
    pub const PACK: i32 = 83;
    pub const RESIZE_NEAREST_NEIGHBOR: i32 = 97;
    pub const SPLIT_V: i32 = 102;
    pub const LEAKY_RELU: i32 = 98;
    pub const QUANTIZE: i32 = 114;
    pub const HARD_SWISH: i32 = 117;
    pub const DEPTH_TO_SPACE: i32 = 5;
    pub const BATCH_TO_SPACE_ND: i32 = 37;
    pub const SPACE_TO_BATCH_ND: i32 = 38;
    pub const TRANSPOSE_CONV: i32 = 67;
    pub const L2_NORMALIZATION: i32 = 11;
    pub const GATHER: i32 = 36;
    pub const ARG_MAX: i32 = 56;
    pub const SUM: i32 = 74;
    pub const REDUCE_MAX: i32 = 82;

    pub fn name(code: i32) -> String {
        match code {
            ADD => "ADD".into(),
            AVERAGE_POOL_2D => "AVERAGE_POOL_2D".into(),
            CONCATENATION => "CONCATENATION".into(),
            CONV_2D => "CONV_2D".into(),
            DEPTHWISE_CONV_2D => "DEPTHWISE_CONV_2D".into(),
            DEQUANTIZE => "DEQUANTIZE".into(),
            FULLY_CONNECTED => "FULLY_CONNECTED".into(),
            LOGISTIC => "LOGISTIC".into(),
            MAX_POOL_2D => "MAX_POOL_2D".into(),
            RESHAPE => "RESHAPE".into(),
            SOFTMAX => "SOFTMAX".into(),
            PAD => "PAD".into(),
            MEAN => "MEAN".into(),
            SQUEEZE => "SQUEEZE".into(),
            STRIDED_SLICE => "STRIDED_SLICE".into(),
            SHAPE => "SHAPE".into(),
            PACK => "PACK".into(),
            QUANTIZE => "QUANTIZE".into(),
            MUL => "MUL".into(),
            SUB => "SUB".into(),
            RELU => "RELU".into(),
            RELU_N1_TO_1 => "RELU_N1_TO_1".into(),
            RELU6 => "RELU6".into(),
            TANH => "TANH".into(),
            LEAKY_RELU => "LEAKY_RELU".into(),
            HARD_SWISH => "HARD_SWISH".into(),
            RESIZE_BILINEAR => "RESIZE_BILINEAR".into(),
            TRANSPOSE => "TRANSPOSE".into(),
            PRELU => "PRELU".into(),
            MAXIMUM => "MAXIMUM".into(),
            MINIMUM => "MINIMUM".into(),
            SLICE => "SLICE".into(),
            SPLIT => "SPLIT".into(),
            SPLIT_V => "SPLIT_V".into(),
            RESIZE_NEAREST_NEIGHBOR => "RESIZE_NEAREST_NEIGHBOR".into(),
            DEPTH_TO_SPACE => "DEPTH_TO_SPACE".into(),
            BATCH_TO_SPACE_ND => "BATCH_TO_SPACE_ND".into(),
            SPACE_TO_BATCH_ND => "SPACE_TO_BATCH_ND".into(),
            TRANSPOSE_CONV => "TRANSPOSE_CONV".into(),
            L2_NORMALIZATION => "L2_NORMALIZATION".into(),
            GATHER => "GATHER".into(),
            ARG_MAX => "ARG_MAX".into(),
            SUM => "SUM".into(),
            REDUCE_MAX => "REDUCE_MAX".into(),
            32 => "CUSTOM".into(),
            other => format!("builtin operator {other}"),
        }
    }
}

/// `BuiltinOptions` union tags.
pub mod options {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const CONCATENATION: u8 = 10;
    pub const ADD: u8 = 11;
    pub const RESIZE_BILINEAR: u8 = 15;
    pub const RESHAPE: u8 = 17;
    pub const MUL: u8 = 21;
    pub const PAD: u8 = 22;
    pub const SUB: u8 = 28;
    pub const REDUCER: u8 = 27;
    pub const SQUEEZE: u8 = 30;
    pub const DEQUANTIZE: u8 = 38;
    pub const SPLIT: u8 = 35;
    pub const RESIZE_NEAREST_NEIGHBOR: u8 = 74;
    pub const SPLIT_V: u8 = 79;
    pub const LEAKY_RELU: u8 = 75;
    pub const HARD_SWISH: u8 = 91;
    pub const BATCH_TO_SPACE_ND: u8 = 24;
    pub const SPACE_TO_BATCH_ND: u8 = 25;
    pub const TRANSPOSE_CONV: u8 = 49;
    pub const DEPTH_TO_SPACE: u8 = 94;
    pub const L2_NORM: u8 = 12;
    pub const GATHER: u8 = 23;
    pub const ARG_MAX: u8 = 40;
}

/// Option-table field ids.
pub mod fields {
    /// Conv2DOptions: padding, stride_w, stride_h, fused_activation_function, dilation_w,
    /// dilation_h.
    pub mod conv {
        pub const PADDING: u16 = 0;
        pub const STRIDE_W: u16 = 1;
        pub const STRIDE_H: u16 = 2;
        pub const ACTIVATION: u16 = 3;
        pub const DILATION_W: u16 = 4;
        pub const DILATION_H: u16 = 5;
    }
    /// DepthwiseConv2DOptions.
    pub mod dw {
        pub const PADDING: u16 = 0;
        pub const STRIDE_W: u16 = 1;
        pub const STRIDE_H: u16 = 2;
        pub const DEPTH_MULTIPLIER: u16 = 3;
        pub const ACTIVATION: u16 = 4;
        pub const DILATION_W: u16 = 5;
        pub const DILATION_H: u16 = 6;
    }
    /// Pool2DOptions.
    pub mod pool {
        pub const PADDING: u16 = 0;
        pub const STRIDE_W: u16 = 1;
        pub const STRIDE_H: u16 = 2;
        pub const FILTER_W: u16 = 3;
        pub const FILTER_H: u16 = 4;
        pub const ACTIVATION: u16 = 5;
    }
    /// FullyConnectedOptions.
    pub mod fc {
        pub const ACTIVATION: u16 = 0;
        pub const WEIGHTS_FORMAT: u16 = 1;
        pub const KEEP_NUM_DIMS: u16 = 2;
    }
    /// SoftmaxOptions.
    pub const SOFTMAX_BETA: u16 = 0;
    /// ConcatenationOptions.
    pub const CONCAT_AXIS: u16 = 0;
    pub const CONCAT_ACTIVATION: u16 = 1;
    /// AddOptions.
    pub const ADD_ACTIVATION: u16 = 0;
    /// MulOptions and SubOptions.
    pub const MUL_ACTIVATION: u16 = 0;
    pub const SUB_ACTIVATION: u16 = 0;
    /// LeakyReluOptions.
    pub const LEAKY_RELU_ALPHA: u16 = 0;
    /// ResizeBilinearOptions (fields 0 and 1 are the deprecated new_height and new_width).
    pub mod resize_bilinear {
        pub const ALIGN_CORNERS: u16 = 2;
        pub const HALF_PIXEL_CENTERS: u16 = 3;
    }
    /// ResizeNearestNeighborOptions.
    pub mod resize_nearest {
        pub const ALIGN_CORNERS: u16 = 0;
        pub const HALF_PIXEL_CENTERS: u16 = 1;
    }
    /// StridedSliceOptions.
    pub mod strided_slice {
        pub const BEGIN_MASK: u16 = 0;
        pub const END_MASK: u16 = 1;
        pub const ELLIPSIS_MASK: u16 = 2;
        pub const NEW_AXIS_MASK: u16 = 3;
        pub const SHRINK_AXIS_MASK: u16 = 4;
        pub const OFFSET: u16 = 5;
    }
    /// ReshapeOptions.
    pub const RESHAPE_NEW_SHAPE: u16 = 0;
    /// TransposeConvOptions: padding, stride_w, stride_h, fused_activation_function (the
    /// first four fields of Conv2DOptions).
    pub use conv as transpose_conv;
    /// DepthToSpaceOptions.
    pub const DEPTH_TO_SPACE_BLOCK_SIZE: u16 = 0;
    /// ReducerOptions.
    pub const REDUCER_KEEP_DIMS: u16 = 0;
    /// GatherOptions.
    pub const GATHER_AXIS: u16 = 0;
    pub const GATHER_BATCH_DIMS: u16 = 1;
    /// ArgMaxOptions.
    pub const ARG_MAX_OUTPUT_TYPE: u16 = 0;
    /// L2NormOptions.
    pub const L2_NORM_ACTIVATION: u16 = 0;
}

/// `Padding` values.
pub const PADDING_SAME: i8 = 0;
pub const PADDING_VALID: i8 = 1;

/// `ActivationFunctionType` values.
pub mod activation {
    pub const NONE: i8 = 0;
    pub const RELU: i8 = 1;
    pub const RELU_N1_TO_1: i8 = 2;
    pub const RELU6: i8 = 3;
}
