/* edgevit_model.h - the interface between the serial agent's builtin-model runner and a
 * generated MCU model (model.h/model.c from the edgevit MCU target). Owned by the agent;
 * the model generator implements it. */
#ifndef EDGEVIT_MODEL_H
#define EDGEVIT_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint32_t (*ev_counter_fn)(void);
extern const uint32_t ev_model_num_layers;
extern const char *const ev_model_layer_names[];   /* ev_model_num_layers entries */
extern const char *const ev_model_layer_ops[];     /* op kind per layer, e.g. "conv2d_s8" */
extern const uint8_t ev_model_sha256[32];          /* sha256 of the artifact's model.evm file */
extern const uint32_t ev_model_input_bytes, ev_model_output_bytes, ev_model_arena_bytes;
/* Runs the network on `input` (int8, NCHW as the manifest says) into `output`; counts[i] = counter delta of layer i.
   Returns 0 or a negative error. */
int ev_model_run(const int8_t *input, int8_t *output, uint32_t *counts, ev_counter_fn counter);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVIT_MODEL_H */
