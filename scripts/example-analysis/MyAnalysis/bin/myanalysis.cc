#include <iostream>
#include "DataFormats/Version/interface/Release.h"
int main() { std::cout << "MyAnalysis built against " << cms::release() << std::endl; }
