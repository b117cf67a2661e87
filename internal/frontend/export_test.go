package frontend

// OpenStore is openStore for the black-box tests.
var OpenStore = openStore
