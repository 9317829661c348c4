test("broken", function()
  assert_eq(1, 1
end)
