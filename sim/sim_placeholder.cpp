// Placeholder so the target exists before the engine lands.
namespace parasol::sim { int sim_placeholder() { return 0; } }
