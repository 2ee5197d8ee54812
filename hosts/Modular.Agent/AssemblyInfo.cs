// The agent drives Linux networking (WireGuard, TUN, unix sockets, file modes): Linux only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
