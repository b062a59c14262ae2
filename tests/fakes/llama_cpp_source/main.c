#include <stdio.h>
#include <string.h>
int part1(void); int part2(void); int part3(void);
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        /* llama-server prints this shape (to stderr) and exits */
        fprintf(stderr, "version: 0.%d.0-fake (build 1, commit fa4e123)\nbuilt with a fake toolchain\n", part1() + part2() + part3());
        return 0;
    }
    fprintf(stderr, "this is a FAKE llama-server: it only answers --version\n");
    return 1;
}
