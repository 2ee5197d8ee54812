using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Modular.E2E.Tests;

/// <summary>
/// Opens a socket inside a test's network namespace from the test process: the calling thread joins
/// the namespace (setns), creates the socket, and returns to its own namespace before anything else
/// runs on it. A socket stays in the namespace it was created in, so the test can talk to a server
/// on a namespace address without touching the host's interfaces.
/// </summary>
internal static partial class NamespaceSocket
{
    private const int CloneNewNet = 0x40000000;

    public static Socket Create(string namespaceName, AddressFamily family, SocketType type, ProtocolType protocol)
    {
        using var own = File.OpenHandle($"/proc/thread-self/ns/net");
        using var target = File.OpenHandle($"/var/run/netns/{namespaceName}");
        if (setns((int)target.DangerousGetHandle(), CloneNewNet) != 0)
        {
            throw new IOException($"setns into {namespaceName} failed: errno {Marshal.GetLastPInvokeError()}");
        }

        try
        {
            return new Socket(family, type, protocol);
        }
        finally
        {
            if (setns((int)own.DangerousGetHandle(), CloneNewNet) != 0)
            {
                // A thread stuck in the wrong namespace would poison the pool: better to stop here.
                Environment.FailFast("could not return a thread to its own network namespace");
            }
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setns(int fd, int nstype);
}
