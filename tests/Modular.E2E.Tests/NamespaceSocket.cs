using System.Net.Sockets;
using Modular.Testing;

namespace Modular.E2E.Tests;

/// <summary>Opens a socket inside a test's network namespace (see <see cref="InNamespace"/>).</summary>
internal static class NamespaceSocket
{
    public static Socket Create(string namespaceName, AddressFamily family, SocketType type, ProtocolType protocol)
        => InNamespace.Create(namespaceName, () => new Socket(family, type, protocol));
}
