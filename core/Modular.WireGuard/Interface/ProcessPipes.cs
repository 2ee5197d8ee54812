using System.Diagnostics;

namespace Modular.WireGuard.Interface;

/// <summary>
/// Closes a started process's redirected pipes when disposed, whether or not they were read to the end.
/// Process.Dispose leaves the pipes of streams the caller read (StandardOutput, StandardError, StandardInput)
/// open until the finalizer runs, so the daemon's descriptor count would follow the GC, not the commands
/// (issue 17's cancellation test counts them exactly). Shared by <see cref="IpCommand"/> and Modular.Core's
/// HostCommand (Core sees this assembly's internals).
/// </summary>
/// <param name="process">A process started with stdout and stderr redirected.</param>
/// <param name="input">True when stdin was redirected too; it is closed first.</param>
internal readonly struct ProcessPipes(Process process, bool input = false) : IDisposable
{
    public void Dispose()
    {
        if (input)
        {
            try
            {
                process.StandardInput.Dispose();
            }
            catch (IOException)
            {
                // The process exited before reading its input (a broken pipe on the final flush).
            }
        }

        process.StandardOutput.Dispose();
        process.StandardError.Dispose();
    }
}
