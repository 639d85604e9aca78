// The one exception type library code throws. Messages are one line a user can act on, and name
// the file involved where there is one ("model.safetensors: header length 12 GB exceeds ...").
#pragma once
#include <stdexcept>
#include <string>

namespace rb {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace rb
