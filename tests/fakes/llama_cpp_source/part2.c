int part2(void) { return 2; }
