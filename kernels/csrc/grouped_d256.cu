// Instantiates the grouped kernel for head_dim 256 (one TU per head_dim: parallel builds).
#define PD_HEAD_DIM 256
#include "grouped_inst.cuh"
