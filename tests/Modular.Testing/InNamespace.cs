using System.Runtime.InteropServices;

namespace Modular.Testing;

/// <summary>
/// Runs a constructor inside a test's network namespace: a fresh thread joins the namespace (setns), runs it and
/// ends, so no pooled thread is ever left in the wrong namespace. Sockets stay in the namespace they were made in,
/// so a test process can own sockets (or whole components that open them) on a namespace's addresses without
/// touching the host's interfaces.
/// </summary>
public static class InNamespace
{
    private const int CloneNewNet = 0x40000000;

    public static T Create<T>(string namespaceName, Func<T> create)
    {
        T? result = default;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (var target = File.OpenHandle($"/var/run/netns/{namespaceName}"))
                {
                    if (setns((int)target.DangerousGetHandle(), CloneNewNet) != 0)
                    {
                        throw new IOException($"setns into {namespaceName} failed: errno {Marshal.GetLastPInvokeError()}");
                    }
                }

                result = create();
            }
            catch (Exception e)
            {
                failure = e;
            }
        })
        { IsBackground = true };
        thread.Start();
        if (!thread.Join(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"creating in {namespaceName} did not finish");
        }

        return failure is null ? result! : throw new InvalidOperationException($"creating in {namespaceName} failed", failure);
    }

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int setns(int fd, int nstype);
}
