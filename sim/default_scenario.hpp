// The scenario `parasol sim` runs with no argument: the text of scenarios/default.yaml as it was when the binary was
// configured (empty when the file did not exist). Its model and cluster references resolve against the data directory.
// Thread behaviour: returns a static string.
#pragma once

namespace parasol::sim {

const char* default_scenario_yaml();

}  // namespace parasol::sim
