// Instantiates the grouped kernel for head_dim 128 (one TU per head_dim: parallel builds).
#define PD_HEAD_DIM 128
#include "grouped_inst.cuh"
