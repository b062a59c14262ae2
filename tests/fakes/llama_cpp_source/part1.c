int part1(void) { return 1; }
