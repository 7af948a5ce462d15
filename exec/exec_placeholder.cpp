// Placeholder so the target exists before the first backend lands.
namespace parasol::exec { int exec_placeholder() { return 0; } }
