using System.Diagnostics;
using Modular.WireGuard.Interface;

namespace Modular.WireGuard.Tests;

/// <summary>
/// Host commands are bounded: a hung `ip` used to hang its caller, because its output was read to the end
/// before the exit timeout started (and the async run had no timeout at all).
/// </summary>
public sealed class IpCommandTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromMilliseconds(500);

    [Fact]
    public void A_command_that_never_ends_is_killed_and_reported_as_timed_out()
    {
        var watch = Stopwatch.StartNew();
        var result = IpCommand.RunBounded("sh", "-c \"echo started; sleep 120\"", Bound);
        Assert.Equal(-1, result.ExitCode);
        Assert.Equal("sh timed out after 0.5 s", result.Error);
        // Returned at all (well before the command's own end) is what matters; the bound is generous for loaded machines.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task An_awaited_command_that_never_ends_fails_with_a_timeout_error()
    {
        var watch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<IOException>(() => IpCommand.RunBoundedAsync("sh", "-c \"sleep 120\"", Bound, CancellationToken.None));
        Assert.Equal("sh -c \"sleep 120\": timed out after 0.5 s", e.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task A_caller_cancel_is_a_cancel_not_a_timeout_and_a_finished_command_reports_its_result()
    {
        using var cancel = new CancellationTokenSource();
        var run = IpCommand.RunBoundedAsync("sh", "-c \"sleep 120\"", TimeSpan.FromMinutes(5), cancel.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);

        Assert.Equal((0, "hi\n", ""), IpCommand.RunBounded("sh", "-c \"echo hi\"", TimeSpan.FromMinutes(1)));
        var failed = await Assert.ThrowsAsync<IOException>(() => IpCommand.RunBoundedAsync("sh", "-c \"echo no >&2; exit 3\"", TimeSpan.FromMinutes(1), CancellationToken.None));
        Assert.Equal("sh -c \"echo no >&2; exit 3\": no", failed.Message);
    }
}
