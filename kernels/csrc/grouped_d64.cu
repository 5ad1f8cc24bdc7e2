// Instantiates the grouped kernel for head_dim 64 (one TU per head_dim: parallel builds).
#define PD_HEAD_DIM 64
#include "grouped_inst.cuh"
