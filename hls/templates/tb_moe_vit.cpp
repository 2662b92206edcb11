// C-simulation testbench: runs the top function on images the host prepared and writes every dumped tensor
// plus the schedule's cycle counts, for edgevit (edgevit/backends/hls/csim.py) to compare with its reference.
//   tb_moe_vit WEIGHTS.bin INPUTS.bin NUM_IMAGES TASK DUMPS.bin STATS.txt
// INPUTS: NUM_IMAGES x TOKENS x PATCH_DIM int64 raw act values. DUMPS: per tensor, int32 name length, name,
// int32 image, int32 block (-1: none), int32 rows, int32 cols, then rows*cols int64 raw values.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "moe_vit.h"

void moe_vit_top(const axi_word_t* ddr, const act_t* patches, act_t* features, act_t* head_out, int task);

static FILE* g_dumps = 0;
static int g_image = 0;

void ev_dump(const char* name, int index, const int64_t* raw, int rows, int cols) {
    const int32_t header[5] = {(int32_t)strlen(name), g_image, index, rows, cols};
    fwrite(header, sizeof(int32_t), 1, g_dumps);
    fwrite(name, 1, strlen(name), g_dumps);
    fwrite(header + 1, sizeof(int32_t), 4, g_dumps);
    fwrite(raw, sizeof(int64_t), (size_t)rows * cols, g_dumps);
}

static std::vector<unsigned char> read_file(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tb: cannot open %s\n", path);
        exit(2);
    }
    std::vector<unsigned char> data;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    fclose(f);
    return data;
}

int main(int argc, char** argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s WEIGHTS.bin INPUTS.bin NUM_IMAGES TASK DUMPS.bin STATS.txt\n", argv[0]);
        return 2;
    }
    const std::vector<unsigned char> image = read_file(argv[1]);
    const std::vector<unsigned char> inputs = read_file(argv[2]);
    const int num_images = atoi(argv[3]), task = atoi(argv[4]);
    const size_t word_bytes = EV_AXI_BITS / 8;
    if (image.size() % word_bytes || inputs.size() != (size_t)num_images * EV_TOKENS * EV_PATCH_DIM * 8) {
        fprintf(stderr, "tb: weight image or input size does not match the configuration\n");
        return 2;
    }
    std::vector<axi_word_t> ddr(image.size() / word_bytes);
    for (size_t w = 0; w < ddr.size(); w++)
        for (size_t byte = 0; byte < word_bytes; byte++)
            ddr[w].range(8 * byte + 7, 8 * byte) = image[w * word_bytes + byte];
    static act_t patches[EV_TOKENS * EV_PATCH_DIM], features[EV_TOKENS * EV_DIM];
    static act_t head[EV_TOKENS * EV_MAX_HEAD_OUT];
    g_dumps = fopen(argv[5], "wb");
    FILE* stats = fopen(argv[6], "w");
    if (!g_dumps || !stats) {
        fprintf(stderr, "tb: cannot write the outputs\n");
        return 2;
    }
    const char* kinds[EV_K_COUNT] = {"linear", "attention", "layernorm", "gate", "expert"};
    for (g_image = 0; g_image < num_images; g_image++) {
        const int64_t* raw = (const int64_t*)&inputs[(size_t)g_image * EV_TOKENS * EV_PATCH_DIM * 8];
        for (int i = 0; i < EV_TOKENS * EV_PATCH_DIM; i++) patches[i] = ev_from_raw<act_t>(raw[i]);
        memset(&ev_csim_stats, 0, sizeof ev_csim_stats);
        moe_vit_top(ddr.data(), patches, features, head, task);
        fprintf(stats, "image %d total %llu\n", g_image, (unsigned long long)ev_csim_stats.total);
        for (int k = 0; k < EV_K_COUNT; k++)
            fprintf(stats, "kind %s %llu %llu\n", kinds[k], (unsigned long long)ev_csim_stats.compute[k],
                    (unsigned long long)ev_csim_stats.stall[k]);
        for (int b = 0; b < EV_DEPTH; b++) {
            fprintf(stats, "experts %d", b);
            for (int e = 0; e < EV_NUM_EXPERTS; e++) fprintf(stats, " %d", ev_csim_stats.expert_tokens[b][e]);
            fprintf(stats, "\n");
        }
    }
    fclose(g_dumps);
    fclose(stats);
    return 0;
}
