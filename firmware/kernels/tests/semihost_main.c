/* A bare-metal test program for a generated model: runs it on the inputs in ev_test_inputs.h and prints each
 * output as one line of hex over semihosting (QEMU: -semihosting). Linked with --specs=rdimon.specs. */
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "ev_test_inputs.h"   /* EV_TEST_COUNT, EV_TEST_INPUT_BYTES, ev_test_inputs[][] (generated) */

static int8_t output[EV_TEST_OUTPUT_BYTES];

int main(void)
{
    if (ev_model_input_bytes != EV_TEST_INPUT_BYTES || ev_model_output_bytes != EV_TEST_OUTPUT_BYTES) {
        printf("EV_ERROR size mismatch\n");
        return 2;
    }
    for (int i = 0; i < EV_TEST_COUNT; ++i) {
        const int rc = ev_model_run(ev_test_inputs[i], output, NULL, NULL);
        printf("EV_OUTPUT %d %d ", i, rc);
        for (uint32_t j = 0; j < ev_model_output_bytes; ++j) {
            printf("%02x", (unsigned)(uint8_t)output[j]);
        }
        printf("\n");
    }
    printf("EV_DONE\n");
    return 0;
}
