int part3(void) { return 3; }
