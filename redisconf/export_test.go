package redisconf

// Uncovered is uncovered, for tests.
var Uncovered = uncovered
